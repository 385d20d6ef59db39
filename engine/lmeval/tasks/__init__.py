"""Local lm-eval tasks: YAML configs lm-eval's TaskManager reads (include_path), their jsonl data,
and the loader the configs name (`local_data.load`)."""
