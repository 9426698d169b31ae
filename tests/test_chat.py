"""Chat templates render exactly as transformers' apply_chat_template(add_generation_prompt=True) on
real-world-style templates (Llama 3, Qwen2 / ChatML, Mistral with raise_exception, a whitespace-control
one with tojson and strftime_now), encode without doubling BOS, and drive `pyinfer run --chat` and
LLM.chat; a model without a template refuses --chat by name."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("jinja2")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

from pyinfer.chat import chat_prompt_ids, render_chat, special_tokens_of  # noqa: E402
from pyinfer.config import SamplingParams  # noqa: E402
from pyinfer.tokenization import load_tokenizer_file  # noqa: E402

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
           "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
           "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
           "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
           "roles are supported!') }}{% endif %}{% endfor %}")
WHITESPACE = """{{- bos_token }}
{% set today = strftime_now("%Y-%m") %}
{% for message in messages %}
    {% if message.role == 'system' %}
<<SYS {{ today }}>> {{ message.content | tojson }}
    {% else %}
{{ message.role | upper }}: {{ message.content }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
ASSISTANT:
{%- endif %}"""
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"]
CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "Be brief. Ünïcödé \"quotes\" <tags> & 日本"},
     {"role": "user", "content": "  What is 2+2?  "}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
     {"role": "user", "content": "tell me a story\nwith two lines"}],
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat_tok")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    corpus = ["Hello there! What is 2+2? tell me a story with two lines", "system user assistant"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=330, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                       special_tokens=[("<|begin_of_text|>", 0)])
    tok.save(str(d / "tokenizer.json"))
    return d


def with_template(tok_dir, tmp_path, template: str | None, **extra):
    (tmp_path / "tokenizer.json").write_bytes((tok_dir / "tokenizer.json").read_bytes())
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "tokenizer_class": "PreTrainedTokenizerFast",
           **extra}
    if template is not None:
        cfg["chat_template"] = template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parametrize("template", [LLAMA3, CHATML, MISTRAL, WHITESPACE], ids=["llama3", "chatml", "mistral", "ws"])
def test_render_equals_transformers(tok_dir, tmp_path, template):
    transformers = pytest.importorskip("transformers")
    d = with_template(tok_dir, tmp_path, template)
    theirs = transformers.AutoTokenizer.from_pretrained(str(d))
    ours = load_tokenizer_file(d, 1000)
    for conv in CONVERSATIONS:
        if template == MISTRAL and conv[0]["role"] == "system":
            with pytest.raises(ValueError, match="Conversation roles must alternate"):
                render_chat(template, conv, special_tokens_of(ours))
            continue
        text = theirs.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        assert render_chat(template, conv, special_tokens_of(ours)) == text
        ids = theirs.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        assert chat_prompt_ids(ours, conv) == list(ids)        # BOS from the template only, never doubled
        assert chat_prompt_ids(ours, conv).count(ours.bos_id) == text.count("<|begin_of_text|>")


def test_bad_messages_are_refused(tok_dir, tmp_path):
    ours = load_tokenizer_file(with_template(tok_dir, tmp_path, MISTRAL), 1000)
    with pytest.raises(ValueError, match="Only user and assistant roles are supported"):
        chat_prompt_ids(ours, [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])
    for bad in ([], [{"role": "user"}], "hello", [{"role": 1, "content": "x"}]):
        with pytest.raises(ValueError, match="chat|message"):
            chat_prompt_ids(ours, bad)


def test_model_without_template_refuses_chat(tok_dir, tmp_path, capsys, stories260k):
    from pyinfer.cli import main
    d = with_template(tok_dir, tmp_path, None)
    code = main(["run", "--preset", "toy", "--tokenizer", str(d), "--chat", "--prompt", "hi", "--steps", "3"])
    assert code == 2 and "no chat template" in capsys.readouterr().err
    code = main(["generate", "--model", str(stories260k["model"]), "--tokenizer", str(stories260k["tokenizer"]),
                 "--chat", "--prompt", "hi"])
    assert code == 2 and "no chat template" in capsys.readouterr().err
    code = main(["generate", "--preset", "toy", "--system", "be nice", "--prompt", "hi"])
    assert code == 2 and "--system" in capsys.readouterr().err


def test_cli_chat_prints_only_the_reply(tok_dir, tmp_path, capsys):
    from pyinfer.api import load
    from pyinfer.cli import main
    d = with_template(tok_dir, tmp_path, CHATML)
    argv = ["generate", "--preset", "toy", "--tokenizer", str(d), "--chat", "--system", "Be brief.",
            "--prompt", "Hello there!", "--steps", "6", "--temperature", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    gen = load(preset="toy", tokenizer=str(d))
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]
    done = gen.chat(conv, max_tokens=6, params=SamplingParams(temperature=0, stop_token_ids=()))
    assert done.result.n_generated == 6 and "<|im_start|>" not in done.text
    ids = chat_prompt_ids(gen.tokenizer, conv)
    assert done.result.prompt_ids == ids
    expect = gen.tokenizer.decode(done.result.output_ids[len(ids) - 1:])
    assert done.text == expect
    same = gen.chat(conv, max_tokens=6, params=SamplingParams(temperature=0))    # the CLI's stop ids
    assert out == "".join(ch for ch in same.text if ch.isprintable() or ch in "\n\t") + "\n"


def test_llm_chat_matches_generate_on_the_rendered_ids(tok_dir, tmp_path):
    from pyinfer.engine import LLM
    d = with_template(tok_dir, tmp_path, LLAMA3)
    llm = LLM(preset="toy", tokenizer=str(d))
    params = SamplingParams(temperature=0, max_tokens=5)
    conv = CONVERSATIONS[1]
    out = llm.chat(conv, params)
    ids = chat_prompt_ids(llm.engine.tokenizer, conv)
    ref = llm.generate([ids], params)
    assert len(out) == 1 and out[0].prompt_ids == ids and out[0].output_ids == ref[0].output_ids
    assert out[0].text == ref[0].text
    both = llm.chat([conv, CONVERSATIONS[0]], params)
    assert [o.output_ids for o in both][0] == ref[0].output_ids and len(both) == 2
