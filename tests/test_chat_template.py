"""task.chat_template: prompts wrapped as a user turn by the tokenizer's chat template, in the one
place that encodes prompts (plad.models.encoding.encode_prompt), so SFT, sampling and scoring agree."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from helpers.pairs import PROMPTS, tiny_llama, train_tokenizer

from plad.backends.hf_sampling import generate
from plad.models.build import load_saved, save_model
from plad.models.encoding import CHAT_TEMPLATE_FLAG, encode_example, encode_prompt, pad_batch, uses_chat_template
from plad.models.logprobs import IGNORE_INDEX
from plad.models.tokenizer import set_prompt_format
from plad.tasks.summarization import SummarizationTask

# ChatML, as SmolLM2-Instruct's: a default system turn, then the user turn, then the assistant's head.
TEMPLATE = (
    "{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LONG = "Summarize: " + " ".join(f"word{i}" for i in range(60)) + "\nOutput:"


def chat_tokenizer():
    """A tiny BPE with ChatML's special tokens; its EOS is the end-of-turn token, as in SmolLM2."""
    tok = train_tokenizer()
    tok.add_special_tokens({"eos_token": "<|im_end|>", "additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def plain():
    return train_tokenizer()


@pytest.fixture(scope="module")
def chat():
    tok = chat_tokenizer()
    assert set_prompt_format(tok, "auto") is True
    return tok


def template_ids(tok, prompt: str) -> list[int]:
    out = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, Mapping) else out)


def test_auto_is_a_no_op_for_trained_bpe_and_none_keeps_todays_encoding(plain):
    assert plain.chat_template is None  # the BPE trained here has no chat template
    unflagged = train_tokenizer()
    assert set_prompt_format(plain, "auto") is False and not uses_chat_template(plain)
    chat_off = chat_tokenizer()
    assert set_prompt_format(chat_off, "none") is False
    for prompt in PROMPTS + [LONG]:
        legacy = [plain.bos_token_id] + plain(prompt, add_special_tokens=False)["input_ids"][-(20 - 1) :]
        assert encode_prompt(plain, prompt, False, 20) == encode_prompt(unflagged, prompt, False, 20) == legacy
        assert encode_prompt(chat_off, prompt, False, 20) == legacy  # same BPE, template not applied
        assert encode_example(plain, prompt, "a b", False, 20, 8) == encode_example(
            unflagged, prompt, "a b", False, 20, 8
        )


def test_prompt_ids_are_apply_chat_templates_and_completion_ends_at_end_of_turn(chat):
    for prompt in PROMPTS:
        ids = encode_prompt(chat, prompt, False, 256)
        assert ids == template_ids(chat, prompt)
        assert chat.decode(ids).startswith("<|im_start|>system") and chat.decode(ids).endswith("assistant\n")
        assert ids[0] != chat.bos_token_id  # the template, not a BOS, opens the prompt
        example = encode_example(chat, prompt, "a b", False, 256, 16)
        n = len(ids)
        assert example["input_ids"][:n] == ids and example["labels"][:n] == [IGNORE_INDEX] * n
        assert example["labels"][n:] == chat("a b", add_special_tokens=False)["input_ids"] + [chat.eos_token_id]
        assert chat.convert_ids_to_tokens(example["labels"][-1]) == "<|im_end|>"


def test_truncation_keeps_the_templates_head_and_tail(chat):
    full = template_ids(chat, LONG)
    rendered = chat.apply_chat_template(
        [{"role": "user", "content": "\x01"}], add_generation_prompt=True, tokenize=False
    )
    head_text, tail_text = rendered.split("\x01")
    head = chat(head_text, add_special_tokens=False)["input_ids"]
    tail = chat(tail_text, add_special_tokens=False)["input_ids"]
    content = chat(LONG, add_special_tokens=False)["input_ids"]
    budget = len(head) + len(tail) + 5
    assert len(full) > budget
    ids = encode_prompt(chat, LONG, False, budget)
    assert len(ids) == budget
    assert ids == head + content[-5:] + tail  # the user content lost its beginning, the template nothing
    assert LONG.endswith(chat.decode(ids[len(head) : -len(tail)]))  # the end of the prompt, next to the answer
    with pytest.raises(ValueError, match=r"^task.max_prompt_tokens: expected more than \d+ \(the chat template"):
        encode_prompt(chat, LONG, False, len(head) + len(tail))


def test_the_flag_travels_with_the_saved_model(chat, tmp_path):
    model = tiny_llama(chat)
    save_model(model, chat, tmp_path)
    _, reloaded = load_saved(tmp_path)
    assert reloaded.init_kwargs[CHAT_TEMPLATE_FLAG] is True and uses_chat_template(reloaded)
    assert encode_prompt(reloaded, PROMPTS[0], False, 256) == encode_prompt(chat, PROMPTS[0], False, 256)
    chat_off = chat_tokenizer()
    set_prompt_format(chat_off, "none")
    save_model(model, chat_off, tmp_path / "off")
    assert not uses_chat_template(load_saved(tmp_path / "off")[1])


def test_scored_completion_tokens_are_the_generated_tokens(chat):
    """Train a tiny model on encode_example's batches (as SFT does) to answer "done." and end its turn;
    generation (plad.backends.hf_sampling.generate, the same encode_prompt) must then emit exactly the scored
    completion ids, <|im_end|> included, and stop there."""
    torch.manual_seed(0)
    model = tiny_llama(chat, seed=1)
    examples = [encode_example(chat, p, "done.", False, 256, None) for p in PROMPTS]
    batch = pad_batch(examples, chat.pad_token_id, False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    model.eval()
    out = generate(model, chat, PROMPTS, max_new_tokens=6, do_sample=False, batch_size=3, progress=False)
    for prompt, example, (text,), (n,) in zip(PROMPTS, examples, out.texts, out.n_tokens):
        prompt_ids = encode_prompt(chat, prompt, False, 256)
        ids = torch.tensor([prompt_ids])
        ref = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=chat.pad_token_id,
            eos_token_id=chat.eos_token_id,
        )
        generated = ref[0, len(prompt_ids) :].tolist()[:n]
        assert text == "done." and generated[-1] == chat.eos_token_id
        assert example["input_ids"] == prompt_ids + generated
        assert encode_example(chat, prompt, text, False, 256, None) == example  # the re-encoded sample


def test_task_option_is_validated():
    assert SummarizationTask(n_train=4, n_unlabeled=4, n_validation=4, n_test=4).chat_template == "auto"
    assert SummarizationTask(chat_template="none").chat_template == "none"
    with pytest.raises(ValueError, match=r"^task.chat_template: expected one of auto, none, got 'always'$"):
        SummarizationTask(chat_template="always")
