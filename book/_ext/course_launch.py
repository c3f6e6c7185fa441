"""Sphinx extension: point the lesson pages' launch buttons at notebooks that exist.

sphinx-book-theme builds its Colab and Binder links from the page's own path
(``book/executed/<lesson>.ipynb``), a file git does not track. This handler runs
after the theme's and swaps in the links ``course_lib.publish.launch`` builds.
"""
from pathlib import Path

from course_lib.publish import launch


def read_launch_config(app):
    # Once per build, from the book being built; a bad _config.yml stops the build
    # with its file, line and field.
    app.course_launch_config = launch.read_launch_config(Path(app.srcdir) / "_config.yml")


def retarget_launch_buttons(app, pagename, templatename, context, doctree):
    lesson = launch.lesson_for_page(pagename)
    if lesson is None:
        return
    links = launch.lesson_links(lesson, app.course_launch_config)
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") in links:
                button["url"] = links[button["text"]]


def setup(app):
    app.connect("builder-inited", read_launch_config)
    # The theme adds its launch buttons at priority 501; run after it.
    app.connect("html-page-context", retarget_launch_buttons, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
