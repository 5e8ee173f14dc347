"""Tiny randomly initialized models, built offline, saved with save_pretrained, loaded by path.

Tests and benchmarks use them where the real models (Mistral-7B, Qwen3-VL) cannot be
downloaded: the same loading and generation code runs, only the weights are random.
"""
from __future__ import annotations

from pathlib import Path

# Mistral's [INST] template (v0.1-v0.3 style): no system role, roles must alternate.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
# The same format, but a leading system message is accepted (Llama-2 style <<SYS>> block).
SYSTEM_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set offset = 0 %}{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
_CORPUS = [
    "A man speaks at a podium in front of a large crowd.",
    "Two people walk down a busy street at night.",
    "The video shows a woman singing on a stage with a band.",
    "Summary: a speaker talks to the audience, then the camera cuts to the street.",
    "Obama and Biden stand together and wave to the people.",
    "A llama runs across a snowy field while the wind blows.",
]


def _build_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer trained in memory on a few sentences (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_tiny_mistral(
    path: str | Path,
    *,
    system_role: bool = False,
    vocab_size: int = 400,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny random MistralForCausalLM + tokenizer + [INST] chat template in path; return it.

    system_role=False gives Mistral's template, which raises on a system message. Generation
    never ends early and prints only readable ASCII: the generation config suppresses EOS,
    the special tokens and the byte tokens that are not printable on their own.
    """
    import torch
    from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size)
    tokenizer.chat_template = SYSTEM_CHAT_TEMPLATE if system_role else MISTRAL_CHAT_TEMPLATE
    vocab = len(tokenizer)
    special = {tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    suppress = sorted(
        i for i in range(vocab)
        if i in special or not all(32 <= ord(c) < 127 for c in tokenizer.decode([i])) or not tokenizer.decode([i])
    )
    config = MistralConfig(
        vocab_size=vocab, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, suppress_tokens=suppress,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
