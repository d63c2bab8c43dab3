"""``python -m esper.simic``: the Hydra app over ``conf/config.yaml``."""

import sys

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from esper.simic.app import CONFIG_NAME, preflight, run
from esper.simic.config import register_schemas

register_schemas()


@hydra.main(version_base="1.3", config_path="pkg://esper.simic.conf", config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float:
    return run(cfg)


def _is_plain_run(argv: list[str]) -> bool:
    """A single run with the packaged config: the case ``preflight`` can check up front."""
    args = get_args_parser().parse_args(argv)
    return not (
        args.multirun
        or args.help
        or args.hydra_help
        or args.cfg
        or args.info
        or args.shell_completion
        or args.config_path
        or args.config_dir
        or args.config_name
        or args.experimental_rerun
    )


if __name__ == "__main__":
    if _is_plain_run(sys.argv[1:]):
        preflight(get_args_parser().parse_args(sys.argv[1:]).overrides)
    main()
