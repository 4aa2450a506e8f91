"""torch -> ONNX with the runtime's metadata inside, verified before it replaces anything."""
