"""Tiny real models for tests: random weights, a real architecture, a tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

#: The checkout's root (tests/ is directly under it), for the files a user reads there (README.md).
REPO = Path(__file__).resolve().parent.parent
#: Data the tests read: public samples with their licences (tests/data/SOURCES.md).
TEST_DATA = Path(__file__).resolve().parent / "data"

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "after the rains the roads are flooded and wet",
    "hello world, this is a tiny model for tests",
    "models are loaded from folders and served over an api",
] * 20


def train_tokenizer(folder: Path, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few sentences, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    fast.save_pretrained(folder)
    return fast


def make_tiny_llama(folder: Path, context: int = 256) -> Path:
    """A 2-layer Llama with random weights (seeded) and its tokenizer, in a HF folder; `context` is its
    context window in tokens."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         # With the default 0.02 a 32-wide random model's logits are nearly flat and only
                         # the untouched output layer could change that, so LoRA could not learn at all.
                         initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_tiny_diffusion(folder: Path) -> Path:
    """A Stable Diffusion pipeline folder (model_index.json, unet, vae, text_encoder, tokenizer, scheduler) with
    random weights (seeded) small enough to denoise a 64x64 image (its native size: 32 latents, a VAE that
    halves) in milliseconds: the real pipeline code, no hub. Attention sits on the lower-resolution block only,
    so larger images stay cheap."""
    import json

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=64)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=80, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16))
    # CLIP's byte-pair vocabulary cut down to single characters (no merges): every prompt still tokenizes.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz0123456789":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    spelled = folder / "spelling"
    spelled.mkdir(exist_ok=True)
    (spelled / "vocab.json").write_text(json.dumps(vocab))
    (spelled / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(spelled / "vocab.json"), str(spelled / "merges.txt"), model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1)
    pipeline = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def make_endless_llama(folder: Path, context: int = 16_384) -> Path:
    """The tiny Llama, changed so that greedy decoding never ends its text: answers run to max_tokens.

    A random model's end-of-text comes early or late depending on the tokenizer trained for it, so a
    test that needs a long answer cannot rely on max_tokens alone. Here end-of-text's logit is always
    0, and two ordinary tokens have opposite output rows: one of their logits is above 0 for any
    hidden state, so the argmax is never end-of-text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    make_tiny_llama(folder, context=context)
    model = AutoModelForCausalLM.from_pretrained(folder)  # its output layer is not tied to the embeddings
    eos = AutoTokenizer.from_pretrained(folder).eos_token_id
    with torch.no_grad():
        head = model.lm_head.weight
        head[eos] = 0
        head[4] = -head[3]
    model.save_pretrained(folder)
    return folder


def call_rating_pages(app, method: str, rest: str, *, client=("127.0.0.1", 50000), scheme: str = "http",
                      cookie: str = "", form: dict | None = None, query: str = "", headers=()) -> tuple[int, dict, str]:
    """One request through the raters' pages' ASGI entry point: (status, headers, body text)."""
    import urllib.parse

    import anyio

    from outcrop.api.rating import PREFIX

    headers = [(b"host", b"rating.test"), *headers] + ([(b"cookie", cookie.encode("latin-1"))] if cookie else [])
    body = urllib.parse.urlencode(form or {}).encode()
    scope = {"type": "http", "method": method, "path": PREFIX + rest, "raw_path": (PREFIX + rest).encode(),
             "query_string": query.encode(), "headers": headers, "client": client, "scheme": scheme}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], head, sent[1]["body"].decode()


def make_pdf(*pages: str) -> bytes:
    """A minimal valid PDF: one Helvetica text line per page, with a correct cross-reference table (pypdf
    cannot write text, so the text it extracts from this is known exactly)."""
    count = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    font = 3 + 2 * count
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode()]
    for index, text in enumerate(pages):
        content = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * index} 0 R "
                       f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def at_once(*calls):
    """Run the calls in threads released together (a race on purpose); their results, an exception standing for
    its call's."""
    import threading

    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the answer under test
            results[i] = exc
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def serving(app, limits):
    """A context manager: the ASGI `app` under Outcrop's HTTP server (cli/serve.py) in a thread, with these limits,
    on a free loopback port; yields the port, and stops the server (and its thread) at the end."""
    import contextlib
    import socket
    import threading

    from outcrop.cli.serve import HttpServer

    @contextlib.contextmanager
    def run():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = HttpServer(app, "127.0.0.1", port, limits)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        assert server.started.wait(10)
        try:
            yield port
        finally:
            server.stop()
            thread.join(timeout=10)
        assert not thread.is_alive()

    return run()
