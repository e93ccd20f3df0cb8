"""One typed settings object for every mlqueue process (HQ, workers, CLI).

Sources, strongest first: environment variables (``MLQUEUE_*``), the HQ home's generated
``config.json`` (written by ``mlqueue hq`` so that ``MLQUEUE_HOME=DIR mlqueue ...`` needs nothing
else), the project's ``config/mlqueue.json`` (hand-edited defaults, shared by every machine that has
the checkout), then the defaults below.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlqueue.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOME_CONFIG_NAME = "config.json"


DEMO_HOME_NAME = ".mlqueue-demo"


def standard_home() -> Path:
    """``$MLQUEUE_HOME``, else ``~/.mlqueue``: where ``mlqueue hq`` keeps data, logs and credentials."""
    return Path(os.environ.get("MLQUEUE_HOME") or Path.home() / ".mlqueue").expanduser()


def demo_home() -> Path | None:
    """The home ``make run`` made in this checkout (``.mlqueue-demo/``), if it has a config."""
    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / DEMO_HOME_NAME / HOME_CONFIG_NAME).is_file():
            return base / DEMO_HOME_NAME
    return None


def default_home() -> Path:
    """The HQ home: where data, logs, generated config and credentials live."""
    return standard_home()


def demo_home_instead() -> Path | None:
    """``make run``'s demo home, for the ``mlqueue`` command when nothing else names a home (no
    ``MLQUEUE_HOME``, no HQ in ``~/.mlqueue``): the README's commands then work as printed after
    ``make run``. Only the command line asks this; library code and tests never guess a home."""
    if "MLQUEUE_HOME" in os.environ or (standard_home() / HOME_CONFIG_NAME).is_file():
        return None
    return demo_home()


def project_config_file() -> Path:
    """``config/mlqueue.json`` next to the current directory, else next to the installed package."""
    for base in (Path.cwd(), PROJECT_ROOT):
        candidate = base / "config" / "mlqueue.json"
        if candidate.is_file():
            return candidate
    return PROJECT_ROOT / "config" / "mlqueue.json"


def read_json_file(path: Path) -> dict[str, Any]:
    """Read a JSON config file; a missing file is an empty config, a broken one is a clear error."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or delete the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object of settings")
    return data


class _JsonFileSource(PydanticBaseSettingsSource):
    """A settings source reading one JSON file whose keys are the settings' field names."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = read_json_file(self.path)
        return {k: v for k, v in data.items() if k in self.settings_cls.model_fields and v is not None}


class Settings(BaseSettings):
    """Everything configurable. Durations are in seconds."""

    model_config = SettingsConfigDict(env_prefix="MLQUEUE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    broker_url: str | None = None
    mongo_url: str | None = None
    redis_url: str | None = None  # sweeps' studies and verdicts when the broker is not Redis (mlqueue.brokers)
    quorum_queues: bool = False  # on RabbitMQ: declare every queue as a quorum queue (docs/scaling.md)
    mongo_db: str = "mlqueue"
    queue: str = "mlqueue"

    lost_after: float = 300.0
    heartbeat_interval: float | None = None
    reaper_interval: float | None = None
    default_time_limit: float = 86400.0
    timeout_grace: float = 10.0
    max_attempts: int = 3
    visibility_timeout: float = 7 * 86400.0
    store_retry_for: float = 600.0
    log_flush_interval: float = 0.3  # how often a running script's new output lines reach its Order
    verdict_timeout: float = 5.0  # longest a sweep trial waits at a rung for its pruner's verdict (verdicts.py)

    worker_concurrency: int = 1

    # the machine's owner (see mlqueue/owner.py): what a worker does while its owner uses the machine
    when_owner_active: str = "ignore"
    idle_after: float = 300.0
    hours: str | None = None
    max_pause: float = 3600.0
    idle_probe: str | None = None
    owner_cpu_threshold: float | None = None
    owner_poll: float = 1.0
    # Machines that differ (mlqueue/capabilities.py, routing.py): what this worker is and may use.
    worker_name: str | None = None
    gpus: str | None = None
    max_memory: float | None = None
    capabilities: str | None = None
    hide_packages: str | None = None
    max_environment_failures: int = 5
    placement: bool = True  # a slower worker passes a Job to one that would finish it sooner (speed.py)
    scripts_dir: Path = PROJECT_ROOT / "ml_scripts"

    bind: str = "127.0.0.1"
    redis_port: int = 0
    mongo_port: int = 0
    http_port: int = 0
    redis_password: str | None = None
    token: str | None = None
    read_token: str | None = None  # views results and the dashboard, changes nothing (see mlqueue.access)
    wrong_token_limit: int = 10  # wrong tokens per client address per minute before it gets 429

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        home = Path(os.environ.get("MLQUEUE_HOME") or default_home())
        return (
            init_settings,
            env_settings,
            _JsonFileSource(settings_cls, home / HOME_CONFIG_NAME),
            _JsonFileSource(settings_cls, project_config_file()),
        )

    @property
    def heartbeat_every(self) -> float:
        """Heartbeats come several times per ``lost_after`` so one slow write never looks like death."""
        if self.heartbeat_interval:
            return self.heartbeat_interval
        return min(30.0, max(0.2, self.lost_after / 5))

    @property
    def reap_every(self) -> float:
        if self.reaper_interval:
            return self.reaper_interval
        return min(10.0, max(0.5, self.lost_after / 4))

    @property
    def home_config_path(self) -> Path:
        return self.home / HOME_CONFIG_NAME

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    def require_urls(self) -> tuple[str, str]:
        """Broker and store URLs, or ``ConfigError`` saying how to get them."""
        if not self.broker_url or not self.mongo_url:
            raise ConfigError(
                f"mlqueue does not know where the HQ is: {self.home_config_path} does not exist and no "
                "broker/mongo URL is set.\n"
                "  - on the HQ machine: start it with `mlqueue hq`, or point at its home with\n"
                "    `mlqueue --home DIR ...` (e.g. --home .mlqueue-demo after `make run`) or MLQUEUE_HOME=DIR;\n"
                "  - from any machine, through the HQ's API: `mlqueue --hq http://HQ:8350 --token TOKEN ...`\n"
                "    (or MLQUEUE_HQ_URL and MLQUEUE_TOKEN);\n"
                "  - for a worker on another machine: MLQUEUE_BROKER_URL and MLQUEUE_MONGO_URL as\n"
                "    `mlqueue hq` printed them, or in config/mlqueue.json."
            )
        return self.broker_url, self.mongo_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def reload_settings() -> Settings:
    """Forget cached settings (after the HQ wrote a new home config, or in tests)."""
    get_settings.cache_clear()
    return get_settings()
