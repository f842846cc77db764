"""What runs: the deployed checkpoint, the artifact and its calibration record, devices, features, the runtime."""
