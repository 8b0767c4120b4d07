"""``python -m workers.engines.verl.train <hydra overrides>``: verl's ``main_ppo`` with our TaskRunner.

Same config (verl's ppo_trainer.yaml), same validation, same ``run_ppo``; only the TaskRunner
differs (``trainer._task_runner_class``: builds ``EdgeplaneTrainer``). With ``trainer.device=cpu``
and the CPU mode's environment (``workers.engines.verl.cpu``) it runs on this machine's CPU;
on any verl but 0.9.1 that mode stops here, naming the version.
"""

from __future__ import annotations

import os

import hydra

from workers.engines.verl.launch import verl_config_dir


@hydra.main(config_path=verl_config_dir(), config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from workers.engines.verl.trainer import _task_runner_class

    if str(config.trainer.get("device", "")) == "cpu" or os.environ.get("VERL_PLATFORM") == "cpu":
        from workers.engines.verl.cpu import UnsupportedVerlVersion, check_verl_version

        try:
            check_verl_version()
        except UnsupportedVerlVersion as exc:
            raise SystemExit(f"error: {exc}") from None
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=_task_runner_class())


if __name__ == "__main__":
    main()
