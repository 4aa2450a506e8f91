"""digitpipe runtime: read digits with an ONNX model through onnxruntime or OpenCV DNN.

Deployable on its own: numpy, OpenCV and onnxruntime only (pyttsx3 for --speak).
It never imports torch or the training side.
"""
