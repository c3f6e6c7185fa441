"""Publishing the course: executing the lessons with papermill, the execution report, the book, and
the Colab/Binder launch links. Never imported by a lesson."""
