"""esper-simic's environments; importing the package registers the ``esper/`` ids with
gymnasium, as gymnasium's suites do (``import ale_py`` registers ``ALE/``)."""

from esper.simic.envs.registration import register_esper_envs

register_esper_envs()
