"""Every setting Outcrop has, with its one default, read from flags, `OUTCROP_*` or `outcrop.toml`.

Precedence, highest first: an explicit value passed by the caller (a CLI flag), the environment
variable `OUTCROP_<NAME>`, the `outcrop.toml` file, the default written below. The toml file is
looked for at `OUTCROP_CONFIG` if set, else in the data directory; its keys are the field names
below (`database_url = "postgresql://..."`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

ENV_PREFIX = "OUTCROP_"
CONFIG_FILE_NAME = "outcrop.toml"


#: Where jobs can run (Settings.job_backend), and what can generate text (Settings.engine).
JOB_BACKENDS = ("local", "ray")
ENGINES = ("auto", "llama.cpp", "transformers", "vllm")

#: The bucket knowledge bases use on an S3 endpoint unless knowledge_store_uri names another place.
VECTOR_BUCKET = "outcrop-vectors"


def _default_data_dir() -> Path:
    return Path("~/.outcrop").expanduser()


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one Outcrop process. Build it with `load_settings`."""

    #: Where metadata, objects, credentials and cached model weights live.
    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8600
    #: SQLAlchemy URL; empty means the SQLite file `<data_dir>/outcrop.db`.
    database_url: str = ""
    #: Any S3 API endpoint (AWS, MinIO, Ceph); empty means the embedded folder `<data_dir>/objects`.
    s3_endpoint: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = "us-east-1"
    #: The region that ARNs carry and that clients sign for.
    region: str = "us-east-1"
    #: "on", or "off" for local experiments only: then every request acts as the first account's root.
    auth: str = "on"
    #: "on" serves HTTPS (needed for bearer API keys): with tls_certfile/tls_keyfile when given, else a
    #: self-signed certificate made in `<data_dir>/tls/`.
    tls: str = "off"
    tls_certfile: str = ""
    tls_keyfile: str = ""
    #: On-demand inference quotas per account; 0 means unlimited.
    quota_requests_per_minute: int = 600
    quota_tokens_per_minute: int = 2_000_000
    #: The root access key written to `<data_dir>/credentials`; empty means generate one on first start.
    root_access_key_id: str = ""
    root_secret_access_key: str = ""
    #: Converted and cached model weights (GGUF turned into safetensors); empty means `<data_dir>/models`.
    model_cache_dir: str = ""
    #: Loaded models beyond this many bytes of weights are unloaded, least recently used first.
    model_memory_bytes: int = 8 * 1024**3
    #: Threads torch computes with in this server (0: torch's default, one per core). Servers sharing a
    #: machine must split its cores (cores / servers each): two servers each using every core spin against
    #: each other and generate many times slower than one (bench/many_servers.py).
    torch_threads: int = 0
    #: What generates text: "auto" (GGUF files on llama.cpp when llama-cpp-python is installed, everything else on
    #: transformers), "llama.cpp" (GGUF files on llama.cpp, required), "transformers" (everything; GGUF converted
    #: once to safetensors), or "vllm" (one NVIDIA GPU, `pip install vllm`: continuous batching with paged
    #: attention, multi-LoRA for provisioned custom models; outcrop/inference/vllm_engine.py). LoRA custom models,
    #: embeddings and reranking run on transformers whatever this says.
    engine: str = "auto"
    #: With engine = "vllm": the share of the GPU each vLLM engine (one per base model) reserves for weights and
    #: KV cache as it starts; two base models on one GPU need at most 0.45 each.
    vllm_gpu_memory_fraction: float = 0.9
    #: Sequences one model generates at once; more requests wait for a free slot.
    max_batch_sequences: int = 16
    #: Images one pipeline call denoises at once: concurrent requests of one shape join it (inference/images.py).
    max_image_batch: int = 8
    #: Seconds a request may wait for a free slot before ThrottlingException (which the SDKs retry with
    #: backoff): with the generation after it, within boto3's 60 s read timeout. 0 means no bound.
    max_queue_wait_seconds: float = 20.0
    #: Models `outcrop serve` loads in the background as it starts (GGUF conversions are cached in
    #: model_cache_dir, so only a fresh data dir pays for them); GET /_outcrop/health says how far it has
    #: got. Comma-separated (or a list in outcrop.toml); empty loads each model on its first request.
    preload_models: str = "huggingface.smollm2-135m-instruct-v1:0,sentence-transformers.all-minilm-l6-v2-v1:0"
    #: The embedding model guardrails' denied topics, content filters and grounding checks read text with
    #: (their thresholds and classifiers were calibrated on its vectors: another model needs new ones).
    guardrail_embedding_model: str = "sentence-transformers.all-minilm-l6-v2-v1:0"
    #: Seconds a request waits for its model to load before ModelNotReadyException (retried by the SDKs);
    #: the load goes on. Well under boto3's 60 s read timeout.
    model_load_wait_seconds: float = 30.0
    #: What one model unit of provisioned throughput buys: sequences generated at once, tokens a minute.
    mu_concurrent_sequences: int = 2
    mu_tokens_per_minute: int = 6000
    #: Seconds a request beyond a provisioned throughput's capacity waits in line before ThrottlingException.
    provisioned_queue_seconds: float = 5.0
    #: Model units one account may hold at once, summed over its provisioned throughputs not deleted (failed
    #: ones included: they are billed until deleted); beyond it, ServiceQuotaExceededException. Each unit
    #: claims batch slots and tokens a minute of the one server, so one account must not buy it all.
    max_model_units_per_account: int = 16
    #: A TOML price table replacing the built-in one (outcrop/catalog/prices.toml).
    price_table: str = ""
    #: The period `outcrop insights report` and the insights API cover when no `since` is given.
    insights_period: str = "7d"
    #: Jobs (fine-tuning, evaluation) that run at once; more wait in the queue.
    max_running_jobs: int = 1
    #: Where jobs (fine-tuning, evaluation, ingestion) run: "local", child processes of the server; or "ray",
    #: jobs submitted to the Ray cluster at ray_address (outcrop/platform/launchers.py says what it needs).
    job_backend: str = "local"
    #: The Ray head's job API for job_backend = "ray", as `ray job submit` takes it: http://HEAD:8265.
    ray_address: str = ""
    #: Where the built-in evaluation datasets come from: empty means the samples that ship with Outcrop
    #: (offline); `hub` the full sets from the Hugging Face hub, cached in `<data_dir>/datasets`; else a
    #: folder laid out like the packaged one (`eval/qa-boolq.jsonl`, ...).
    builtin_datasets_dir: str = ""
    #: Prompts sampled (with a fixed seed) from a built-in evaluation dataset.
    builtin_dataset_records: int = 100
    #: Largest request body accepted, in bytes; bigger ones are refused before parsing.
    max_request_bytes: int = 25 * 1024 * 1024
    #: Seconds a connection has to send a request's complete headers, from when it opens or its last
    #: response ended; then it is closed (clients that trickle partial headers would hold it forever).
    http_header_timeout_seconds: float = 10.0
    #: Seconds an idle keep-alive connection (HTTP/1.1 or HTTP/2) is kept after a response; at most
    #: http_header_timeout_seconds. An idle HTTP/2 connection is closed with a GOAWAY.
    http_keep_alive_seconds: int = 5
    #: Seconds a request's body may go without a byte arriving, and the grace before its minimum rate applies
    #: (http_body_min_bytes_per_second); then the server answers 408 (HTTP/1.1) and closes the connection.
    #: A request whose body has arrived is never cut, however long its answer takes.
    http_body_timeout_seconds: float = 10.0
    #: Bytes a second a request's body must average once http_body_timeout_seconds have passed: a body is
    #: given that grace plus one second per this many bytes received (0: no minimum rate, the gap alone).
    http_body_min_bytes_per_second: int = 1024
    #: Open connections the server holds; one beyond is closed at once.
    http_max_connections: int = 1000
    #: Open connections from one client address; one beyond is closed at once. Loopback clients and
    #: trusted_proxies are not counted (a proxy carries many clients).
    http_max_connections_per_address: int = 100
    #: Load balancers and reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed:
    #: comma-separated addresses or CIDR blocks (a list in outcrop.toml). Only for a connection from one of
    #: them is the client the right-most X-Forwarded-For hop not in this list, and its scheme
    #: X-Forwarded-Proto's (aws:SourceIp, aws:SecureTransport, the rule that takes bearer keys over HTTPS or
    #: from this machine only). Empty: forwarded headers are ignored, the client is the connection's peer.
    trusted_proxies: str = ""
    #: Bytes of a request line plus headers buffered while still incomplete; beyond, the answer is 431
    #: (h11's max_incomplete_event_size; its default of 16 KiB is tight for long ARNs in paths). Also
    #: HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE.
    http_max_header_bytes: int = 64 * 1024
    #: Requests one HTTP/2 connection may have in progress at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    http2_max_concurrent_streams: int = 100
    #: Requests one connection may make before the server closes it (HTTP/1.1 `Connection: close`,
    #: HTTP/2 GOAWAY; clients reconnect): bounds what one connection can open and reset in a loop.
    http_max_requests_per_connection: int = 1000
    #: Where knowledge bases keep their vectors and full-text indexes (LanceDB): empty means the folder
    #: `<data_dir>/vectors`, or the bucket `outcrop-vectors` when s3_endpoint is set (made on first use);
    #: else a folder or an `s3://bucket/prefix` on that S3 endpoint.
    knowledge_store_uri: str = ""
    #: Chunks in a knowledge base before its vectors get an approximate-nearest-neighbour index (below
    #: it, exact search is fast enough and exact).
    knowledge_ann_threshold: int = 20_000
    #: Seconds a RetrieveAndGenerate session (`sessionId`) is kept after its last turn (Bedrock: 24 h).
    knowledge_session_seconds: int = 24 * 3600
    #: Reason-act steps one InvokeAgent turn may take before it answers that it could not finish.
    agent_max_steps: int = 6
    #: Tokens one reason-act step may write (a call, or the final answer); steps are greedy. A final answer cut
    #: off here is kept up to its first repeated sentence.
    agent_step_tokens: int = 300
    log_level: str = "info"
    #: Bedrock model ids -> the local model that answers for them, added to or replacing the built-in table
    #: of well-known ids (outcrop/profiles/aliases.py); an empty value removes a built-in entry. In
    #: outcrop.toml a `[model_aliases]` table with quoted keys; in OUTCROP_MODEL_ALIASES a JSON object or
    #: `id=model,id=model`.
    model_aliases: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def auth_enabled(self) -> bool:
        return self.auth.strip().lower() not in ("off", "false", "0", "no")

    @property
    def tls_enabled(self) -> bool:
        return self.tls.strip().lower() in ("on", "true", "1", "yes")

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """trusted_proxies as networks (a bare address is a network of one)."""
        networks = []
        for item in self.trusted_proxies.split(","):
            if item.strip():
                try:
                    networks.append(ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"setting trusted_proxies: {item.strip()!r} is not an IP address or "
                                     "CIDR block (such as 10.0.0.5 or 10.0.0.0/24)") from None
        return tuple(networks)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'outcrop.db'}"

    @property
    def preload_model_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.strip() for m in self.preload_models.split(",") if m.strip()))

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def vectors_uri(self) -> str:
        if self.knowledge_store_uri:
            return self.knowledge_store_uri
        return f"s3://{VECTOR_BUCKET}" if self.s3_endpoint else str(self.data_dir / "vectors")

    @property
    def vectors_storage_options(self) -> dict[str, str]:
        """LanceDB's options for reaching the S3 endpoint with the object store's credentials."""
        if not self.vectors_uri.startswith("s3://"):
            return {}
        options = {"region": self.s3_region}
        if self.s3_endpoint:
            options |= {"endpoint": self.s3_endpoint, "allow_http": str(self.s3_endpoint.startswith("http:")).lower()}
        if self.s3_access_key_id:
            options |= {"aws_access_key_id": self.s3_access_key_id, "aws_secret_access_key": self.s3_secret_access_key}
        return options

    @property
    def models_dir(self) -> Path:
        return Path(self.model_cache_dir).expanduser() if self.model_cache_dir else self.data_dir / "models"

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / "credentials"


def _coerce(name: str, raw: Any, target: Any) -> Any:
    """Turn a string from the environment (or a toml value) into the field's type."""
    if target is dict or target == "dict[str, str]":
        return _mapping(name, raw)
    if target is Path or target == "Path":
        return Path(str(raw)).expanduser()
    for kind, word in ((int, "an integer"), (float, "a number")):
        if target is kind or target == kind.__name__:
            try:
                return kind(raw)
            except (TypeError, ValueError):
                raise ValueError(f"setting {name} must be {word}, got {raw!r}") from None
    if isinstance(raw, list | tuple):  # a list in outcrop.toml for a comma-separated setting
        return ",".join(str(item) for item in raw)
    return str(raw)


def _mapping(name: str, raw: Any) -> dict[str, str]:
    """A toml table, or from the environment a JSON object or `key=value,key=value`."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{"):
            import json

            try:
                raw = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"setting {name} is not a JSON object: {exc}") from None
        else:
            pairs = [item.partition("=") for item in text.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ValueError(f"setting {name} must be a JSON object or key=value pairs, got {raw!r}")
            raw = {key.strip(): value.strip() for key, _, value in pairs}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError(f"setting {name} must map strings to strings (in outcrop.toml, quote keys that have "
                         f"dots: \"anthropic.claude-3-haiku-20240307-v1:0\" = \"...\"), got {raw!r}")
    return dict(raw)


def load_settings(**overrides: Any) -> Settings:
    """Resolve every setting. `overrides` with a value of None are ignored (an unset CLI flag)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")

    env = {f.name: os.environ[ENV_PREFIX + f.name.upper()] for f in fields(Settings)
           if ENV_PREFIX + f.name.upper() in os.environ}

    # The data dir decides where outcrop.toml is, so it is resolved first.
    data_dir = given.get("data_dir") or env.get("data_dir")
    config_path = os.environ.get(ENV_PREFIX + "CONFIG")
    file_values: dict[str, Any] = {}
    candidate = Path(config_path).expanduser() if config_path else (
        Path(str(data_dir)).expanduser() if data_dir else _default_data_dir()) / CONFIG_FILE_NAME
    if candidate.is_file():
        with candidate.open("rb") as fh:
            file_values = tomllib.load(fh)
        bad = set(file_values) - {f.name for f in fields(Settings)}
        if bad:
            raise ValueError(f"{candidate}: unknown settings {sorted(bad)}")

    values: dict[str, Any] = {}
    for f in fields(Settings):
        for source in (given, env, file_values):
            if f.name in source:
                values[f.name] = _coerce(f.name, source[f.name], f.type)
                break
    settings = dataclasses.replace(Settings(), **values)
    settings.trusted_proxy_networks  # noqa: B018 - a malformed address is an error at start, not at a request
    for name, allowed in (("job_backend", JOB_BACKENDS), ("engine", ENGINES)):
        if getattr(settings, name) not in allowed:
            raise ValueError(f"setting {name} must be one of {', '.join(allowed)}, got {getattr(settings, name)!r}")
    return settings
