"""Running a built model elsewhere: runtimes (ONNX Runtime), executors (Ray), the exporter, the server, streamed predict."""
