"""``python -m workers.engines.verl.main <hydra overrides>``: verl's ``main_ppo`` with our TaskRunner.

Same config (verl's ppo_trainer.yaml), same validation, same ``run_ppo``; only the TaskRunner
differs (``trainer._task_runner_class``: builds ``EdgeplaneTrainer``). Not run on CPU: it
starts worker groups and vLLM.
"""

from __future__ import annotations

import hydra

from workers.engines.verl.launch import verl_config_dir


@hydra.main(config_path=verl_config_dir(), config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from workers.engines.verl.trainer import _task_runner_class

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=_task_runner_class())


if __name__ == "__main__":
    main()
