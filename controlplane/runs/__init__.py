"""Run configs, runs, attempts, step summaries, prompt observations, selection decisions and
prompt states."""
