"""Chat markup in a raw prompt: each family read back to the conversation its own template wrote.

The templates below are the published chat templates of each family (Llama 3 and Llama 2 as Meta
ships them, Mistral 7B Instruct v0.1's, SmolLM2's ChatML), set on a tiny tokenizer made here, and
rendered by `render_chat`, the function serving uses."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outcrop.inference.chat import render_chat
from outcrop.runtime.chat_markup import parse_chat_markup
from outcrop.runtime.formats import TEXT_FORMATS

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' "
    "+ message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
LLAMA4 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|header_start|>' + message['role'] + '<|header_end|>\n\n' "
    "+ message['content'] | trim + '<|eot|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|header_start|>assistant<|header_end|>\n\n' }}{% endif %}")
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

#: family -> (template, begin-of-text, end-of-text, whether the template writes a system prompt back)
TEMPLATES = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>", True),
    "llama4": (LLAMA4, "<|begin_of_text|>", "<|eot|>", True),
    "llama2": (LLAMA2, "<s>", "</s>", True),
    "mistral": (MISTRAL, "<s>", "</s>", False),
    "chatml": (SMOLLM2, None, "<|im_end|>", True),
}
FAMILY = {"llama3": "llama3", "llama4": "llama4", "llama2": "inst", "mistral": "inst", "chatml": "chatml"}


def make_tokenizer(template: str, bos: str | None, eos: str):
    """A word-level tokenizer with the family's special tokens and chat template (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "hello", "what", "is", "the", "capital", "of", "france", "?", "\n"]
    inner = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [t for t in (bos, eos) if t]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="[UNK]", bos_token=bos, eos_token=eos,
                                        additional_special_tokens=specials)
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def family(request):
    template, bos, eos, keeps_system = TEMPLATES[request.param]
    return request.param, make_tokenizer(template, bos, eos), keeps_system


CONVERSATIONS = [
    ("", [{"role": "user", "content": "What is the capital of France?"}]),
    ("Answer in one word.", [{"role": "user", "content": "What is the capital of France?"}]),
    ("Be brief.", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Name a colour.\nJust one."}]),
    ("", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
          {"role": "user", "content": "And the capital of Spain?"}]),
    # A prefill: the answer begins with the caller's words.
    ("", [{"role": "user", "content": "Write a haiku."}, {"role": "assistant", "content": "Sure, here"}]),
]


@pytest.mark.parametrize(("system", "messages"), CONVERSATIONS)
def test_each_family_reads_back_the_chat_its_template_wrote(family, system, messages):
    name, tokenizer, keeps_system = family
    if system and not keeps_system:
        pytest.skip("Mistral v0.1's template has no system prompt")
    prompt = render_chat(tokenizer, messages, system)
    chat = parse_chat_markup(prompt)
    assert chat is not None, prompt
    assert chat.family == FAMILY[name]
    assert chat.messages == messages
    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face" if name == "chatml" else ""
    assert chat.system == (system or default)
    assert chat.generation_prompt == (messages[-1]["role"] == "user")
    # Rendering what was read gives back the very prompt: the model's own markup survives the round trip.
    assert render_chat(tokenizer, chat.messages, chat.system) == prompt


def test_another_familys_chat_renders_as_the_serving_models_own():
    """A Llama 3 prompt on a ChatML model is exactly the ChatML prompt of the same conversation."""
    llama3 = make_tokenizer(LLAMA3, "<|begin_of_text|>", "<|eot_id|>")
    chatml = make_tokenizer(SMOLLM2, None, "<|im_end|>")
    system, messages = CONVERSATIONS[2]
    chat = parse_chat_markup(render_chat(llama3, messages, system))
    assert render_chat(chatml, chat.messages, chat.system) == render_chat(chatml, messages, system)


# Llama 3.1's template, tools left out: every prompt gets a system turn that starts with two date lines.
LLAMA31 = (
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}{{- 'Cutting Knowledge Date: December 2023\n' }}"
    "{{- 'Today Date: 26 Jul 2024\n\n' }}{{- system_message }}{{- '<|eot_id|>' }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif %}")


@pytest.mark.parametrize("system", ["", "Be brief."])
def test_llama31_date_lines_are_the_templates_not_the_callers(system):
    tokenizer = make_tokenizer(LLAMA31, "<|begin_of_text|>", "<|eot_id|>")
    messages = [{"role": "user", "content": "Hi"}]
    prompt = render_chat(tokenizer, messages, system)
    chat = parse_chat_markup(prompt)
    assert (chat.system, chat.messages) == (system, messages)
    assert render_chat(tokenizer, chat.messages, chat.system) == prompt  # not written twice


def test_a_rendered_llama3_prompt_tokenizes_with_one_begin_of_text():
    """The runtime tokenizes a rendered chat without adding special tokens: the template's BOS is the only one."""
    tokenizer = make_tokenizer(LLAMA3, "<|begin_of_text|>", "<|eot_id|>")
    body = {"prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhello<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n", "max_gen_len": 5}
    request = TEXT_FORMATS["meta-llama"].parse(body)
    assert request.prompt is None
    ids = tokenizer(render_chat(tokenizer, request.messages, request.system), add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


# -- what LangChain's ChatBedrock writes (langchain_aws.chat_models.bedrock, provider meta / mistral / qwen) --

LANGCHAIN = {
    # provider "meta", a llama3 model id: no blank line after the header, turns joined by newlines.
    "<|begin_of_text|>\n<|start_header_id|>system<|end_header_id|>Be brief.<|eot_id|>\n"
    "<|start_header_id|>user<|end_header_id|>Hi<|eot_id|>\n<|start_header_id|>assistant<|end_header_id|>Hello."
    "<|eot_id|>\n<|start_header_id|>user<|end_header_id|>Capital of France?<|eot_id|>\n"
    "<|start_header_id|>assistant<|end_header_id|>\n\n": "llama3",
    # provider "meta", a llama4 model id.
    "<|begin_of_text|>\n<|header_start|>system<|header_end|>Be brief.<|eot|>\n<|header_start|>user<|header_end|>Hi"
    "<|eot|>\n<|header_start|>assistant<|header_end|>Hello.<|eot|>\n<|header_start|>user<|header_end|>"
    "Capital of France?<|eot|>\n<|header_start|>assistant<|header_end|>": "llama4",
    # provider "mistral" (and "meta" with a Llama 2 id): the system block outside [INST], no </s>.
    "<<SYS>> Be brief. <</SYS>>\n[INST] Hi [/INST]\nHello.\n[INST] Capital of France? [/INST]": "inst",
    # provider "qwen".
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello."
    "<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n": "chatml",
}
LANGCHAIN_CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                  {"role": "user", "content": "Capital of France?"}]


@pytest.mark.parametrize("prompt", LANGCHAIN)
def test_langchain_chat_bedrock_prompts(prompt):
    chat = parse_chat_markup(prompt)
    assert chat is not None
    assert (chat.family, chat.system, chat.messages) == (LANGCHAIN[prompt], "Be brief.", LANGCHAIN_CHAT)
    assert chat.generation_prompt


def test_langchain_itself_writes_what_is_read():
    """The same, from the installed langchain-aws's own converters, where it is installed."""
    bedrock = pytest.importorskip("langchain_aws.chat_models.bedrock")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    chat = [SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello."), HumanMessage("Capital of France?")]
    for provider, model in [("meta", "meta.llama3-1-8b-instruct-v1:0"), ("meta", "meta.llama4-scout-17b-instruct"),
                            ("meta", "meta.llama2-13b-chat-v1"), ("mistral", "mistral.mistral-7b-instruct-v0:2"),
                            ("qwen", "qwen.qwen3-32b-v1:0")]:
        prompt = bedrock.ChatPromptAdapter.convert_messages_to_prompt(provider, chat, model)
        parsed = parse_chat_markup(prompt)
        assert parsed is not None, (provider, model, prompt)
        assert (parsed.system, parsed.messages) == ("Be brief.", LANGCHAIN_CHAT), (provider, model)


# -- the end of the prompt: answer, or continue a prefill ------------------------------------------

@pytest.mark.parametrize(("prompt", "messages"), [
    ("<s>[INST] Hi [/INST]", [{"role": "user", "content": "Hi"}]),
    ("[INST]Hi[/INST]", [{"role": "user", "content": "Hi"}]),
    ("[INST] Hi [/INST] Sure,", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure,"}]),
    # A closed user turn with no assistant header after it: the answer comes next all the same.
    ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", [{"role": "user", "content": "Hi"}]),
    ("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nOk, "
     "so", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ok, so"}]),
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant", [{"role": "user", "content": "Hi"}]),
    ("  <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST] A </s><s>[INST] B [/INST]\n",
     [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}]),
])
def test_how_the_prompt_ends(prompt, messages):
    chat = parse_chat_markup(prompt)
    assert chat is not None and chat.messages == messages
    assert chat.generation_prompt == (messages[-1]["role"] == "user")


# -- what stays raw ----------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", [
    "",
    "What is the capital of France?",
    "Human: hi\n\nAssistant:",
    "User: hi\nBot:",
    # Prose that mentions the markup.
    "Explain what [INST] and [/INST] mean in a Llama 2 prompt.",
    "Explain this: [INST] hi [/INST]",
    "The token <|im_start|> opens a ChatML turn.",
    "<s>struck</s> out",
    "[INST] is the tag that opens an instruction",
    # Malformed markup.
    "[INST] Hi",
    "[INST] Hi [/INST] Hello </s>",                       # a closed assistant turn: nothing left to answer
    "[INST] a [/INST]\n[INST] b [/INST]",                  # two user turns in a row
    "[INST] a [INST] b [/INST]",
    "[INST] Hi [/INST] A </s> trailing text",
    "[INST] <<SYS>> S [/INST]",
    "<<SYS>> S <</SYS>> [INST] <<SYS>> T <</SYS>> Hi [/INST]",  # two system prompts
    "[AVAILABLE_TOOLS] [] [/AVAILABLE_TOOLS][INST] Hi [/INST]",
    "<|begin_of_text|>[INST] Hi [/INST]",
    "<|start_header_id|>user<|end_header_id|>\n\nHi",      # an unclosed user turn
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|> and more",
    "<|start_header_id|>user\n\nHi<|eot_id|>",
    "<|start_header_id|>ipython<|end_header_id|>\n\n{}<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\n<|python_tag|>x<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nX"
    "<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA"
    "<|eot_id|>",
    "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eom_id|>",
    "<|im_start|>user\nHi<|im_end|> text<|im_start|>assistant\n",
    "<|im_start|>tool\n{}<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user Hi<|im_end|>",
    "<|im_start|>user\nHi<|im_start|>assistant\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n",
])
def test_no_markup_stays_raw(prompt):
    assert parse_chat_markup(prompt) is None
    request = TEXT_FORMATS["mistral"].parse({"prompt": prompt, "max_tokens": 5})
    assert request.prompt == prompt and request.messages == []


# -- the formats -----------------------------------------------------------------------------------

LLAMA3_PROMPT = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
                 "\n\n")


@pytest.mark.parametrize(("fmt", "body"), [
    ("meta-llama", {"prompt": LLAMA3_PROMPT, "max_gen_len": 5}),
    ("mistral", {"prompt": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]", "max_tokens": 5}),
    ("titan-text", {"inputText": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"}),
])
def test_formats_taking_a_raw_prompt_turn_markup_into_a_chat(fmt, body):
    request = TEXT_FORMATS[fmt].parse(body)
    assert request.prompt is None
    assert (request.system, request.messages) == ("Be brief.", [{"role": "user", "content": "Hi"}])


def test_plain_prompts_keep_their_old_meaning():
    assert TEXT_FORMATS["meta-llama"].parse({"prompt": "hello world"}).prompt == "hello world"
    titan = TEXT_FORMATS["titan-text"].parse({"inputText": "User: hi\nBot:"})
    assert titan.prompt is None and titan.messages == [{"role": "user", "content": "User: hi\nBot:"}]


# -- properties ------------------------------------------------------------------------------------

_ANY_MARKUP = re.compile(r"<\|[a-z0-9_]+\|>|\[/?[A-Z_]+\]|<</?SYS>>|</?s>")
_content = st.text(st.sampled_from("abcXYZ019 .,?!\n[]<>|/_"), min_size=1, max_size=40).map(str.strip).filter(
    lambda s: s and not _ANY_MARKUP.search(s))


@st.composite
def conversations(draw):
    turns = draw(st.integers(1, 5))
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": draw(_content)} for i in range(turns)]
    return draw(st.one_of(st.just(""), _content)), messages


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_any_conversation_survives_any_familys_markup(conversation):
    system, messages = conversation
    for name, (template, bos, eos, keeps_system) in TEMPLATES.items():
        tokenizer = _TOKENIZERS.setdefault(name, make_tokenizer(template, bos, eos))
        chat = parse_chat_markup(render_chat(tokenizer, messages, system if keeps_system else ""))
        assert chat is not None, name
        assert chat.messages == messages, name
        if keeps_system and system:
            assert chat.system == system, name


_TOKENIZERS: dict[str, object] = {}


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["[INST] x [/INST]", "<|im_start|>user\nx<|im_end|>",
                                               "<|start_header_id|>user<|end_header_id|>x<|eot_id|>"]))
def test_text_before_the_markup_keeps_a_prompt_raw(prose, markup):
    if prose.strip() and not _ANY_MARKUP.search(prose):
        assert parse_chat_markup(prose.strip() + " " + markup) is None
