"""``esper-simic`` and ``python -m esper.simic``: the Hydra app over ``conf/config.yaml``."""

import os

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from esper.simic.app import CONFIG_MODULE, CONFIG_NAME, fail, run
from esper.simic.config import describe_config_exception, register_schemas


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def app(cfg: DictConfig) -> float:
    return run(cfg)


def main() -> None:
    """Run the app; a config that does not compose stops with one line and exit code 2.

    Hydra composes the config once; the checks that must come before any dir is created
    run on that composition (``door.Door``). Hydra itself prints a composition error over
    several lines and exits 1; its documented ``HYDRA_FULL_ERROR`` makes it raise the error
    instead, and here it becomes the same one line as any other config error.
    """
    register_schemas()
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        app()
    except (HydraException, OmegaConfBaseException) as error:
        fail(describe_config_exception(error))


if __name__ == "__main__":
    main()
