"""Tiny random-weight models that read images, made by the tests: a SmolVLM (Idefics3), a CLIP and a CLIPSeg, as HF
folders."""

from __future__ import annotations

import io
from pathlib import Path

from tests.helpers import train_tokenizer

#: SmolVLM's own chat template: each message's content is a list of text and image parts.
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def make_tiny_vlm(folder: Path) -> Path:
    """An Idefics3 (SmolVLM's architecture) with a 1-layer vision tower on 32 x 32 px images (4 image tokens
    after the pixel shuffle) and a 2-layer Llama, its processor and tokenizer: the real processing and
    generation code, no hub."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlamaConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
        *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))]})
    images = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": 32},
                                    max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=SMOLVLM_TEMPLATE)
    torch.manual_seed(0)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, initializer_range=0.3)
    config = Idefics3Config(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config=text.to_dict(), scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                            tokenizer.convert_tokens_to_ids("<end_of_utterance>")]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_tiny_clip(folder: Path) -> Path:
    """A CLIPModel with 1-layer towers (16-wide, a 16-long projection) on 32 x 32 px images, its tokenizer
    (wrapping each text in <s> ... </s>, as CLIP's does, so the text tower pools at the end) and image processor."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(folder)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tokenizer.bos_token_id), ("</s>", tokenizer.eos_token_id)])
    tokenizer.model_max_length = 16
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    torch.manual_seed(0)
    common = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(tokenizer), "max_position_embeddings": 16,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**common, "image_size": 32, "patch_size": 8}, projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    return folder


def make_tiny_clipseg(folder: Path) -> Path:
    """A CLIPSegForImageSegmentation with 1-layer towers (16-wide) on 32 x 32 px images and an 8-wide decoder on
    that layer, its processor (a CLIP tokenizer spelling words letter by letter, as make_tiny_diffusion's, and a
    ViT image processor): the real processing and segmentation code, no hub. Its random logits spread over about
    -9 to 9; lowered by 2, a prompt's mask (segmentation.THRESHOLD, dilated) covers about half of a 64 x 64 image
    of noise, so that what inpainting changes and what it keeps can both be seen."""
    import json

    import torch
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32)
    CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 32, "width": 32}),
                     tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    common = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPSegConfig(
        text_config={**common, "vocab_size": len(vocab), "max_position_embeddings": 32, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**common, "image_size": 32, "patch_size": 8}, projection_dim=16, extract_layers=(0,),
        reduce_dim=8, decoder_num_attention_heads=2, decoder_intermediate_size=16)
    model = CLIPSegForImageSegmentation(config)
    with torch.no_grad():  # logits pulled down, so that a mask covers some of an image (about half, grown)
        model.decoder.transposed_convolution.bias.fill_(-2.0)
    model.save_pretrained(folder)
    return folder


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    """A plain image of one colour, encoded."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()
