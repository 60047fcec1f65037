"""What every layer stands on: the option registry and its checks, errors, atomic files, provenance, signals,
ranks."""
