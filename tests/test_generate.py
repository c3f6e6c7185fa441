"""Generation: first against a model whose next token is known, then on a small real model.

``KnownNext`` is a transformers model with no learned weights: after token ``w[i]`` of a fixed
chain of letters it gives ``w[i+1]`` the logit ``STRENGTH`` and every other chain letter 0; every
other token (the prompt's, the special tokens) gets -1e4. So greedy decoding writes exactly
``"abcdefgh..."``, never stops early, and sampling has a known distribution:
p(next = successor) = e^3 / (e^3 + 19) ≈ 0.51 at temperature 1. Each test below compares
``sample_answers`` with what that construction implies, so each fails when generation breaks.
"""
from __future__ import annotations

import math

import pytest
import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from course_lib.generate import (PreallocatedLayer, answer, answer_generators, cache_keyword, decode_batch, pick_next_tokens,
                                 sample_answers)
from course_lib.sft import chat_prompt

CHAIN = "abcdefghijklmnopqrst"  # 20 letters, one byte-level token each
STRENGTH = 3.0
P_SUCCESSOR = math.exp(STRENGTH) / (math.exp(STRENGTH) + len(CHAIN) - 1)  # ≈ 0.514 at temperature 1


@pytest.fixture(scope="module")
def tokenizer():
    """The course's own byte-level BPE tokenizer and ChatML template, trained on a little of its text (a blink)."""
    from course_lib.tiny_model import read_corpus, train_tokenizer

    return train_tokenizer(read_corpus()[:40], vocab_size=600)


def known_next_model(tokenizer, letters: str | list[str] = CHAIN):
    """The chain's letters: a string, or a list of single-token texts (so that it can hold ``<|im_end|>``)."""
    chain = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in letters]
    assert all(len(ids) == 1 for ids in chain), "each letter must be one token"
    chain = [ids[0] for ids in chain]

    class KnownNextConfig(PretrainedConfig):
        model_type = "known-next"

    class KnownNext(PreTrainedModel, GenerationMixin):
        config_class = KnownNextConfig

        def __init__(self, config):
            super().__init__(config)
            self.anchor = torch.nn.Parameter(torch.zeros(1))  # for the device lookup; never used
            position = torch.full((config.vocab_size,), -1, dtype=torch.long)
            position[torch.tensor(chain)] = torch.arange(len(chain))
            self.register_buffer("position", position, persistent=False)
            self.register_buffer("chain", torch.tensor(chain), persistent=False)
            self.inputs: list[torch.Tensor] = []  # what each forward call saw
            self.post_init()

        def _init_weights(self, module):
            pass

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            self.inputs.append(input_ids.detach().clone())
            b, n = input_ids.shape
            logits = torch.full((b, n, self.config.vocab_size), -1e4)
            logits[:, :, self.chain] = 0.0
            pos = self.position[input_ids]  # -1 for anything outside the chain: the next is the first letter
            successor = self.chain[(pos + 1) % len(chain)]
            logits.scatter_(2, successor.unsqueeze(-1), STRENGTH)
            return CausalLMOutputWithPast(logits=logits)

    config = KnownNextConfig(vocab_size=len(tokenizer), use_cache=False, num_hidden_layers=0, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
    return KnownNext(config).eval()


@pytest.fixture()
def model(tokenizer):
    return known_next_model(tokenizer)


def greedy(prompts, model, tokenizer, **kw):
    return sample_answers(model, tokenizer, prompts, temperature=0, progress=False, **kw)


def test_greedy_returns_exactly_the_new_tokens(model, tokenizer):
    out = greedy(["頭が痛いです", "熱がある"], model, tokenizer, max_new_tokens=6, batch_size=2)
    # the first generated token is kept, the prompt is not returned, nothing is cut
    assert out == [["abcdef"], ["abcdef"]]
    assert answer(model, tokenizer, "頭が痛いです", max_new_tokens=4) == "abcd"


def test_an_answer_is_returned_without_surrounding_white_space(tokenizer):
    spaced = known_next_model(tokenizer, " ab\n")  # writes " ab\n", then again from the space
    assert greedy(["質問"], spaced, tokenizer, max_new_tokens=4) == [["ab"]]
    assert greedy(["質問"], spaced, tokenizer, max_new_tokens=7) == [["ab\n ab"]]  # inner white space is kept


def test_answer_is_one_quiet_greedy_answer_of_128_tokens_with_the_system_prompt(model, tokenizer, capsys):
    capsys.readouterr()
    text = answer(model, tokenizer, "頭が痛いです", system="あなたは薬剤師です")
    assert text == (CHAIN * 7)[:128]  # the default length, greedy
    assert tokenizer.decode(model.inputs[0][0]) == chat_prompt(tokenizer, "頭が痛いです", "あなたは薬剤師です")
    assert capsys.readouterr().err == ""  # no progress bar for a single answer


@pytest.mark.parametrize("max_new_tokens", [1, 3, 11])
def test_max_new_tokens_is_respected_exactly(model, tokenizer, max_new_tokens):
    assert greedy(["質問"], model, tokenizer, max_new_tokens=max_new_tokens) == [[CHAIN[:max_new_tokens]]]
    assert len(model.inputs) == max_new_tokens  # one forward pass per new token, none after the last


def test_the_model_sees_the_chat_prompt_with_system_and_generation_prompt(model, tokenizer):
    greedy(["頭痛に効く薬は?"], model, tokenizer, max_new_tokens=1, system="あなたは薬剤師です")
    seen = tokenizer.decode(model.inputs[0][0])
    assert seen == chat_prompt(tokenizer, "頭痛に効く薬は?", "あなたは薬剤師です")
    assert seen.startswith("<|im_start|>system\nあなたは薬剤師です<|im_end|>\n<|im_start|>user\n頭痛に効く薬は?")
    assert seen.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_has_the_generation_prompt_and_the_system_prompt(tokenizer):
    with_system = chat_prompt(tokenizer, "質問", "指示")
    assert with_system == "<|im_start|>system\n指示<|im_end|>\n<|im_start|>user\n質問<|im_end|>\n<|im_start|>assistant\n"
    assert chat_prompt(tokenizer, "質問") == "<|im_start|>user\n質問<|im_end|>\n<|im_start|>assistant\n"


def test_prompts_of_different_lengths_in_one_batch_are_left_padded(model, tokenizer):
    out = greedy(["短い", "ずっと長い質問文で、パディングが必要になります"], model, tokenizer, max_new_tokens=5, batch_size=2)
    assert out == [["abcde"], ["abcde"]]
    first = model.inputs[0]
    assert first[0, 0].item() == tokenizer.pad_token_id and first[1, 0].item() != tokenizer.pad_token_id
    assert tokenizer.padding_side == "right"  # restored for training


def successor_share(answers: list[str]) -> float:
    """The share of generated letters that follow their predecessor in the chain (the first follows the prompt)."""
    hits = total = 0
    for a in answers:
        prev = -1
        for c in a:
            hits += CHAIN.index(c) == (prev + 1) % len(CHAIN)
            total += 1
            prev = CHAIN.index(c)
    return hits / total


def sampled(model, tokenizer, n=40, **kw):
    kw = {"temperature": 1.0, "top_p": 1.0, **kw}
    return sample_answers(model, tokenizer, ["質問"], n=n, max_new_tokens=5, batch_size=8, progress=False, **kw)[0]


def test_sampling_at_temperature_one_follows_the_model_distribution(model, tokenizer):
    answers = sampled(model, tokenizer, n=80)
    assert all(len(a) == 5 and set(a) <= set(CHAIN) for a in answers)
    # 400 letters, p ≈ 0.514: a 4-sigma band around it (sigma ≈ 0.025)
    assert abs(successor_share(answers) - P_SUCCESSOR) < 0.1
    assert len(set(answers)) > 60


def test_a_tiny_temperature_is_greedy(model, tokenizer):
    # logits / 0.01: the successor's probability is 1 - 19 e^-300
    assert set(sampled(model, tokenizer, temperature=0.01)) == {"abcde"}


def test_a_high_temperature_spreads_the_distribution(model, tokenizer):
    # temperature 5: p(successor) = e^0.6 / (e^0.6 + 19) ≈ 0.088, far below 0.51
    hot = sampled(model, tokenizer, n=80, temperature=5.0)
    assert successor_share(hot) < 0.2
    assert len(set(hot)) == len(hot)


def test_a_small_top_p_keeps_only_the_most_likely_token(model, tokenizer):
    # the successor alone holds 0.51 of the mass: with top_p = 0.3 the nucleus is that one token
    assert set(sampled(model, tokenizer, top_p=0.3)) == {"abcde"}
    # with top_p = 0.9 the nucleus holds the others too
    assert successor_share(sampled(model, tokenizer, n=80, top_p=0.9)) < 0.8


def test_every_answer_gets_its_own_seed_and_a_seed_repeats(model, tokenizer):
    kw = dict(n=6, temperature=5.0, max_new_tokens=8, progress=False)
    one_per_batch = sample_answers(model, tokenizer, ["質問"], batch_size=1, seed=3, **kw)[0]
    assert len(set(one_per_batch)) == 6  # six answers, six different draws (19^8 possible answers)
    all_in_one = sample_answers(model, tokenizer, ["質問"], batch_size=6, seed=3, **kw)[0]
    assert len(set(all_in_one)) == 6
    assert sample_answers(model, tokenizer, ["質問"], batch_size=1, seed=3, **kw)[0] == one_per_batch
    assert sample_answers(model, tokenizer, ["質問"], batch_size=1, seed=4, **kw)[0] != one_per_batch


def test_n_answers_per_prompt_in_prompt_order(model, tokenizer):
    out = greedy(["一", "二", "三"], model, tokenizer, n=2, max_new_tokens=2, batch_size=4)
    assert out == [["ab", "ab"]] * 3
    with pytest.raises(ValueError):
        sample_answers(model, tokenizer, ["一"], n=0, progress=False)


def test_the_model_is_left_in_its_training_mode(model, tokenizer):
    model.train()
    greedy(["一"], model, tokenizer, max_new_tokens=1)
    assert model.training
    model.eval()
    greedy(["一"], model, tokenizer, max_new_tokens=1)
    assert not model.training


# ----------------------------------------------------------------------------- the decoding loop itself


def test_pick_next_tokens_inverts_the_cumulative_distribution():
    # probabilities 0.2, 0.5, 0.3 (in that token order): cumulative 0.2, 0.7, 1.0
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]] * 5))
    u = torch.tensor([0.0, 0.19, 0.2, 0.69, 0.99])
    assert pick_next_tokens(logits, u, temperature=1.0, top_p=1.0).tolist() == [0, 0, 1, 1, 2]
    assert pick_next_tokens(logits, None, temperature=1.0, top_p=1.0).tolist() == [1] * 5  # greedy


def test_a_token_of_zero_probability_is_never_picked():
    logits = torch.tensor([[0.0, -float("inf"), 0.0]] * 2)  # 0.5, 0, 0.5: cumulative 0.5, 0.5, 1.0
    assert pick_next_tokens(logits, torch.tensor([0.5, 0.4999]), 1.0, 1.0).tolist() == [2, 0]


def test_temperature_divides_the_logits_before_the_softmax():
    # logits 0 and ln 3: p = 0.25, 0.75 at T = 1; at T = 2 the logits are 0 and ln √3, so p = 1/(1+√3) ≈ 0.366
    logits = torch.tensor([[0.0, math.log(3.0)]] * 2)
    u = torch.tensor([0.3, 0.36])
    assert pick_next_tokens(logits, u, 1.0, 1.0).tolist() == [1, 1]
    assert pick_next_tokens(logits, u, 2.0, 1.0).tolist() == [0, 0]


def test_top_p_keeps_the_most_likely_tokens_until_their_mass_reaches_top_p():
    # probabilities 0.2, 0.5, 0.3: with top_p = 0.6 the nucleus is {token 1 (0.5), token 2 (0.3)}, total 0.8
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]] * 4))
    u = torch.tensor([0.0, 0.62, 0.63, 0.99])  # u × 0.8 against 0.5, 0.8: 0.496 → 1, 0.504 → 2
    assert pick_next_tokens(logits, u, 1.0, 0.6).tolist() == [1, 1, 2, 2]
    # top_p = 0.5: token 1 alone reaches it
    assert pick_next_tokens(logits, u, 1.0, 0.5).tolist() == [1] * 4
    # top_p = 0.81: token 0 is needed too, and is picked for the top 0.2 of u
    assert pick_next_tokens(logits[:1], torch.tensor([0.81]), 1.0, 0.81).tolist() == [0]


def test_an_answer_does_not_depend_on_the_batch_it_was_decoded_in(model, tokenizer):
    kw = dict(n=5, temperature=5.0, max_new_tokens=10, seed=7, progress=False)
    alone = sample_answers(model, tokenizer, ["一", "二"], batch_size=1, **kw)
    assert sample_answers(model, tokenizer, ["一", "二"], batch_size=3, **kw) == alone
    assert sample_answers(model, tokenizer, ["一", "二"], batch_size=10, **kw) == alone


def test_a_finished_answer_leaves_the_batch(tokenizer):
    eos = tokenizer.eos_token
    with_end = known_next_model(tokenizer, [*CHAIN[:6], eos])  # 7 tokens, one of them the end of the turn
    answers = sample_answers(with_end, tokenizer, ["質問"], n=12, temperature=5.0, max_new_tokens=30, batch_size=12,
                             seed=1, progress=False)[0]
    # one character per token; an answer shorter than 30 tokens ended with the (dropped) end-of-turn token
    written = [len(a) + 1 if len(a) < 30 else 30 for a in answers]
    assert len(set(written)) > 3 and min(written) < 30  # the draw gives answers of many lengths
    assert all(eos not in a and set(a) <= set(CHAIN[:6]) for a in answers)
    rows_per_step = [x.shape[0] for x in with_end.inputs]
    # step t's forward pass holds exactly the answers that have more than t tokens to write
    assert rows_per_step == [sum(w > t for w in written) for t in range(len(rows_per_step))]
    assert len(rows_per_step) == max(written)  # no pass after the last answer ends


def test_greedy_decoding_stops_when_every_answer_has_ended(tokenizer):
    with_end = known_next_model(tokenizer, ["x", "y", tokenizer.eos_token])
    assert sample_answers(with_end, tokenizer, ["一", "二"], temperature=0, max_new_tokens=50, progress=False) == [["xy"], ["xy"]]
    assert len(with_end.inputs) == 3  # x, y, end: then nothing is left to decode


def test_the_cache_keyword_follows_the_forward_signature():
    class NewStyle(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            pass

    class OldStyle(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            pass

    assert cache_keyword(NewStyle()) == "cache"
    assert cache_keyword(OldStyle()) == "past_key_values"


# ----------------------------------------------------------------------------- a small real model


def test_n_answers_per_prompt_in_order(small_model):
    model, tok = small_model
    prompts = ["一つ目", "二つ目の質問", "三"]
    out = sample_answers(model, tok, prompts, n=4, max_new_tokens=6, batch_size=5, progress=False)
    assert [len(a) for a in out] == [4, 4, 4]
    assert all(isinstance(s, str) for a in out for s in a)


def test_sampling_repeats_with_the_same_seed(small_model):
    model, tok = small_model
    kw = dict(n=3, temperature=1.0, max_new_tokens=8, progress=False)
    a = sample_answers(model, tok, ["質問"], seed=1, **kw)
    assert a == sample_answers(model, tok, ["質問"], seed=1, **kw)
    assert a != sample_answers(model, tok, ["質問"], seed=2, **kw)


def test_left_padding_batches_match_single_prompts(small_model):
    """Greedy answers must not depend on which other prompts share the batch."""
    model, tok = small_model
    prompts = ["短い", "これはずっと長い質問文で、パディングが必要になります"]
    batched = sample_answers(model, tok, prompts, temperature=0, max_new_tokens=8, batch_size=2, progress=False)
    single = [sample_answers(model, tok, [p], temperature=0, max_new_tokens=8, progress=False)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored for training


def test_greedy_answers_equal_transformers_generate(small_model):
    """The course's loop (KV cache written in place, finished rows dropped) against ``model.generate``."""
    model, tok = small_model
    prompts = ["短い", "これはずっと長い質問文で、パディングが必要になります", "三つ目"]
    ours = sample_answers(model, tok, prompts, temperature=0, max_new_tokens=24, batch_size=3, progress=False)
    tok.padding_side = "left"
    try:
        enc = tok([chat_prompt(tok, p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=24, do_sample=False, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    finally:
        tok.padding_side = "right"
    theirs = [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert [a[0] for a in ours] == theirs


# ----------------------------------------------------------------------------- decode_batch against a recording model
#
# ``Scripted`` writes a fixed next token after each token (2→3→4→end, 5→4→end, 6→2, anything else → end), records
# every forward call, and stores each call's input tokens and positions in the KV cache it is given, so the test can
# read back what the cache holds. The expected calls below are worked out by hand from decode_batch's docstring:
# left padding, positions counting real tokens only, finished rows leaving the batch and the cache.

PAD, END = 0, 1
NEXT_TOKEN = {2: 3, 3: 4, 4: END, 5: 4, 6: 2}


class Scripted(torch.nn.Module):
    vocab = 7

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                logits_to_keep=None):
        b, n = input_ids.shape
        # the cache's one layer holds (batch, 1 head, tokens, 1): keys = the tokens fed so far, values = their positions
        keys, values = past_key_values.update(input_ids.float().view(b, 1, n, 1), position_ids.float().view(b, 1, n, 1), 0)
        self.calls.append({"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist(),
                           "position_ids": position_ids.tolist(), "use_cache": use_cache, "logits_to_keep": logits_to_keep,
                           "cached_tokens": keys[:, 0, :, 0].long().tolist(), "cached_positions": values[:, 0, :, 0].long().tolist()})
        logits = torch.zeros(b, 1, self.vocab)
        for row, last in enumerate(input_ids[:, -1].tolist()):
            logits[row, 0, NEXT_TOKEN.get(last, END)] = 1.0
        return CausalLMOutputWithPast(logits=logits)


# three left-padded prompts of four tokens; they end in 2, 5 and 6, so they write 3 4 end, 4 end and 2 3 4 end
PROMPTS = torch.tensor([[PAD, PAD, PAD, 2], [5, 5, 5, 5], [PAD, PAD, 6, 6]])
MASK = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]])


def test_decode_batch_feeds_positions_masks_and_the_cache_and_drops_finished_rows():
    model = Scripted()
    out = decode_batch(model, PROMPTS, MASK, max_new_tokens=5, eos_token_id=END, pad_token_id=PAD)
    assert out.tolist() == [[3, 4, END, PAD, PAD], [4, END, PAD, PAD, PAD], [2, 3, 4, END, PAD]]
    assert out.dtype == torch.long
    calls = model.calls
    assert len(calls) == 4  # the prompts, then one call per step while a row is writing; none after the last end
    assert all(c["use_cache"] is True and c["logits_to_keep"] == 1 for c in calls)
    # 1: the whole prompts; positions count real tokens only (a padded position is 0)
    assert calls[0]["input_ids"] == PROMPTS.tolist() and calls[0]["attention_mask"] == MASK.tolist()
    assert calls[0]["position_ids"] == [[0, 0, 0, 0], [0, 1, 2, 3], [0, 0, 0, 1]]
    # 2: each row's first new token, at the next position, the mask one longer
    assert calls[1]["input_ids"] == [[3], [4], [2]] and calls[1]["position_ids"] == [[1], [4], [2]]
    assert calls[1]["attention_mask"] == [[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    # 3: row 1 wrote its end: rows 0 and 2 go on, with their own masks, positions and cache rows
    assert calls[2]["input_ids"] == [[4], [3]] and calls[2]["position_ids"] == [[2], [3]]
    assert calls[2]["attention_mask"] == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    assert calls[2]["cached_tokens"] == [[PAD, PAD, PAD, 2, 3, 4], [PAD, PAD, 6, 6, 2, 3]]
    assert calls[2]["cached_positions"] == [[0, 0, 0, 0, 1, 2], [0, 0, 0, 1, 2, 3]]
    # 4: row 0 ended too; row 2 alone
    assert calls[3]["input_ids"] == [[4]] and calls[3]["position_ids"] == [[4]]
    assert calls[3]["attention_mask"] == [[0, 0, 1, 1, 1, 1, 1]]
    assert calls[3]["cached_tokens"] == [[PAD, PAD, 6, 6, 2, 3, 4]]
    assert calls[3]["cached_positions"] == [[0, 0, 0, 1, 2, 3, 4]]


def test_decode_batch_stops_at_max_new_tokens_without_a_call_after_the_last_token():
    model = Scripted()
    out = decode_batch(model, PROMPTS, MASK, max_new_tokens=2, eos_token_id=END, pad_token_id=PAD)
    assert out.tolist() == [[3, 4], [4, END], [2, 3]]
    assert len(model.calls) == 2
    model = Scripted()
    one = decode_batch(model, PROMPTS[1:2], MASK[1:2], max_new_tokens=1, eos_token_id=END, pad_token_id=PAD)
    assert one.tolist() == [[4]] and len(model.calls) == 1


def test_decode_batch_pads_with_the_given_pad_token():
    out = decode_batch(Scripted(), PROMPTS[1:2], MASK[1:2], max_new_tokens=4, eos_token_id=END, pad_token_id=6)
    assert out.tolist() == [[4, END, 6, 6]]


def test_decode_batch_samples_with_the_uniforms_at_temperature_one_by_default():
    # logits 0 and ln 3 for tokens 0 and 1: p = 0.25, 0.75 at temperature 1, 1/(1+√3) ≈ 0.366 for token 0 at 2
    class TwoTokens(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return CausalLMOutputWithPast(logits=torch.tensor([[[0.0, math.log(3.0)]]] * input_ids.shape[0]))

    ids, mask = torch.tensor([[1]]), torch.tensor([[1]])
    u = torch.tensor([[0.3, 0.2]])  # 0.3: token 1 at temperature 1, token 0 at 2; 0.2: token 0 either way
    assert decode_batch(TwoTokens(), ids, mask, 2, eos_token_id=5, pad_token_id=5, uniforms=u).tolist() == [[1, 0]]
    assert decode_batch(TwoTokens(), ids, mask, 2, eos_token_id=5, pad_token_id=5, uniforms=u,
                        temperature=2.0).tolist() == [[0, 0]]
    # no uniforms: greedy, token 1
    assert decode_batch(TwoTokens(), ids, mask, 2, eos_token_id=5, pad_token_id=5).tolist() == [[1, 1]]


def test_preallocated_layer_writes_each_token_into_room_reserved_at_the_start():
    layer = PreallocatedLayer(2)
    assert layer.room == 2
    layer.batch_select_indices(torch.tensor([0]))  # nothing stored yet: nothing to select, no error
    assert not layer.is_initialized
    k1 = torch.arange(12.0).view(2, 1, 3, 2)  # batch 2, 1 head, 3 tokens, width 2
    keys, values = layer.update(k1, -k1)
    assert layer.is_initialized and layer.key_buffer.shape == (2, 1, 5, 2) and layer.value_buffer.shape == (2, 1, 5, 2)
    assert torch.equal(keys, k1) and torch.equal(values, -k1)
    k2 = torch.tensor([100.0, 101.0, 200.0, 201.0]).view(2, 1, 1, 2)
    keys, values = layer.update(k2, -k2)
    assert keys[0, 0].tolist() == [[0, 1], [2, 3], [4, 5], [100, 101]]
    assert keys[1, 0].tolist() == [[6, 7], [8, 9], [10, 11], [200, 201]]
    assert torch.equal(values, -keys) and (layer.keys is keys) and (layer.values is values)
    layer.batch_select_indices(torch.tensor([1]))  # only the second row goes on
    assert layer.key_buffer.shape == (1, 1, 5, 2) and layer.keys[0, 0].tolist() == [[6, 7], [8, 9], [10, 11], [200, 201]]
    assert torch.equal(layer.values, -layer.keys)
    keys, values = layer.update(torch.tensor([[[[300.0, 301.0]]]]), torch.tensor([[[[-300.0, -301.0]]]]))
    assert keys[0, 0].tolist() == [[6, 7], [8, 9], [10, 11], [200, 201], [300, 301]]
    assert values[0, 0, -1].tolist() == [-300, -301] and values.shape == (1, 1, 5, 2)


def test_answer_generators_seed_answer_j_with_seed_times_100003_plus_j():
    gens = answer_generators(seed=2, first=3, count=2)
    assert [g.initial_seed() for g in gens] == [2 * 100_003 + 3, 2 * 100_003 + 4]
    assert [g.initial_seed() for g in answer_generators(0, 0, 3)] == [0, 1, 2]
    assert answer_generators(5, 7, 0) == []


def test_the_cache_keyword_of_a_wrapped_model_is_its_base_models():
    class NewStyle(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, **kwargs):
            pass

    class Wrapper(torch.nn.Module):  # as a PEFT model: its own forward takes anything, the base model decides
        def __init__(self):
            super().__init__()
            self.base = NewStyle()

        def get_base_model(self):
            return self.base

        def forward(self, *args, **kwargs):
            pass

    assert cache_keyword(Wrapper()) == "cache"


def test_a_uniform_of_exactly_one_still_picks_a_token_of_the_vocabulary():
    # u is drawn from [0, 1); at its closed end u × total equals the last cumulative mass, which the search places one
    # past the end: the last token (2 of 0, 1, 2) is returned, never an id outside the vocabulary
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    assert pick_next_tokens(logits, torch.tensor([1.0]), 1.0, 1.0).tolist() == [2]


# ----------------------------------------------------------------------------- another device, without a GPU
# The "meta" device holds shapes only: it stands in for a GPU here. The uniforms are drawn on the CPU (each answer's own
# generator) while the model's logits live on the model's device.


def test_pick_next_tokens_moves_the_cpu_uniforms_to_the_device_of_the_logits():
    logits = torch.zeros(2, 3, device="meta")
    for top_p in (1.0, 0.5):
        picked = pick_next_tokens(logits, torch.tensor([0.1, 0.9]), 1.0, top_p)
        assert picked.device.type == "meta" and picked.shape == (2,)


def test_decode_batch_keeps_its_tokens_on_the_device_of_the_input():
    class Zeros(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, **kwargs):
            return CausalLMOutputWithPast(logits=torch.zeros(input_ids.shape[0], 1, 5, device=input_ids.device))

    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    out = decode_batch(Zeros(), ids, torch.ones(2, 3, dtype=torch.long, device="meta"), max_new_tokens=1,
                       eos_token_id=4, pad_token_id=0)
    assert out.device.type == "meta" and out.shape == (2, 1) and out.dtype == torch.long


def test_answer_decodes_one_sequence_only(model, tokenizer):
    assert answer(model, tokenizer, "頭が痛いです", max_new_tokens=3) == "abc"
    assert [x.shape[0] for x in model.inputs] == [1, 1, 1]  # one row in every forward pass, not two identical answers
