"""Tiny randomly initialized models, built offline, saved with save_pretrained, loaded by path.

Tests and benchmarks use them where the real models (Mistral-7B, Qwen3-VL) cannot be
downloaded: the same loading and generation code runs, only the weights are random.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def slowed_forward(model, step_s: float) -> Iterator[list[float]]:
    """Sleep step_s after every forward pass of model; yields the list of the passes' end times."""
    ends: list[float] = []

    def hook(module, args, output):  # returns None: the output is left alone
        time.sleep(step_s)
        ends.append(time.time())

    handle = model.register_forward_hook(hook)
    try:
        yield ends
    finally:
        handle.remove()

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
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=8192, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, suppress_tokens=_unprintable_ids(tokenizer),
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _unprintable_ids(tokenizer) -> list[int]:
    """Special tokens and tokens that do not decode to printable ASCII on their own."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS))
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        if i in special or not text or not all(32 <= ord(c) < 127 for c in text):
            out.append(i)
    return out


# LLaVA-style [INST] template for a processor: content parts {"type": "image"} / {"type": "text"}.
LLAVA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST] "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %} [/INST]"
    "{% else %}{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}"
    "{{ eos_token }}{% endif %}{% endfor %}"
)


def build_tiny_llava(path: str | Path, *, image_size: int = 32, patch_size: int = 8, seed: int = 0) -> Path:
    """Save a tiny random LLaVA (CLIP vision + Mistral text) and its processor in path; return it.

    The processor uses the PIL CLIP image processor, so it builds and loads without
    torchvision (which cannot be installed beside CPU torch here). Load it with
    AutoProcessor / AutoModelForImageTextToText; it serves with `transformers serve PATH`.
    """
    import torch
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        MistralConfig,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(400)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    # "default" drops CLIP's class token: (image_size / patch_size)^2 image tokens in the prompt.
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=patch_size, projection_dim=32)
    text = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=(image_size // patch_size) ** 2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id,
        suppress_tokens=_unprintable_ids(tokenizer),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# Qwen's ChatML with vision markers, reduced to what a caption request uses.
QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen3_vl(path: str | Path, *, patch_size: int = 16, max_image_tokens: int = 16, seed: int = 0) -> Path:
    """Save a tiny random Qwen3-VL in path laid out like the hub repository; return it.

    Like Qwen/Qwen3-VL-2B-Instruct the folder holds preprocessor_config.json,
    video_preprocessor_config.json (Qwen3VLVideoProcessor, which needs torchvision),
    tokenizer files and chat_template.json, so AutoProcessor fails on it without torchvision
    exactly as on the real model. At most max_image_tokens image tokens reach the prompt.
    """
    import json

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    merge = 2
    side = patch_size * merge  # one image token = a merge x merge block of patches
    image_config = {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255, "resample": 3,
        "patch_size": patch_size, "temporal_patch_size": 2, "merge_size": merge,
        "size": {"shortest_edge": side * side, "longest_edge": side * side * max_image_tokens},
        "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    video_config = dict(image_config, size={"shortest_edge": 4096, "longest_edge": 25165824},
                        video_processor_type="Qwen3VLVideoProcessor")
    del video_config["image_processor_type"]
    (path / "preprocessor_config.json").write_text(json.dumps(image_config, indent=2))
    (path / "video_preprocessor_config.json").write_text(json.dumps(video_config, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_VL_CHAT_TEMPLATE}, indent=2))
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
                             "mrope_interleaved": True},
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=patch_size,
                           spatial_merge_size=merge, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    eos = ids["<|im_end|>"]
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=ids["<|endoftext|>"],
        suppress_tokens=sorted(set(_unprintable_ids(tokenizer)) | set(ids.values())),
    )
    model.save_pretrained(path)
    return path


def install_in_hub_cache(folder: str | Path, repo_id: str, hf_home: str | Path,
                         commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Copy a saved model folder into an HF_HOME laid out as the hub client's cache, as if downloaded.

    The layout is huggingface_hub's: hub/models--ORG--NAME/refs/main holds the commit, and
    snapshots/COMMIT/ the files (plain copies here, where a download makes links to blobs).
    """
    import shutil

    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# Words the index and search tests caption with, so the tiny BERT's tokenizer knows them whole.
BERT_CORPUS = _CORPUS + [
    "A man at a podium speaks to the crowd.", "Biden waves from the stage.", "Obama shakes hands.",
    "A red car drives past the window.", "A dog sleeps on the sofa.", "A kitchen with a kettle boiling.",
    "The crowd applauds loudly.", "Snow falls on an empty parking lot.",
]
BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(path: str | Path, *, hidden_size: int = 32, num_layers: int = 2, vocab_size: int = 300,
                    seed: int = 0) -> Path:
    """Save a tiny random BERT as a sentence-transformers folder (Transformer, mean Pooling, Normalize) in path.

    Laid out like sentence-transformers/all-MiniLM-L6-v2 (modules.json, config.json, weights,
    a WordPiece tokenizer trained offline by `tokenizers`, 1_Pooling/, 2_Normalize/), so
    SentenceTransformer(path) loads it with no hub. Random weights: equal texts get equal vectors,
    nothing more can be assumed of their meaning.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    bert_dir = path / "_bert"
    bert_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(BERT_CORPUS * 4, trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]", model_max_length=128)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=128,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = Transformer(str(bert_dir), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"),
                                         Normalize()], device="cpu")
    model.save(str(path))
    import shutil

    shutil.rmtree(bert_dir)
    return path
