"""run-digit: read digits from images, a video file or a camera with an ONNX model.

Exit codes: 0 every input was read; 1 some inputs could not be read (the rest were);
2 usage or model error (the model was refused at load: nothing was read); 3 the model
failed while reading (what was read before is printed, then it stops).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import cv2

from digitpipe.runtime.api import Reader
from digitpipe.runtime.bundled import TRAINED_MODEL, bundled_model, default_model
from digitpipe.runtime.detector import DETECTOR_INT8_NAME, DETECTOR_NAME
from digitpipe.runtime.sequence import SEQUENCE_NAME
from digitpipe.runtime.errors import InputError, ModelError, first_line
from digitpipe.runtime.foreign import Overrides, parse_numbers, parse_size
from digitpipe.runtime.imageio import DEFAULT_MAX_PIXELS
from digitpipe.runtime.model import DEFAULT_MAX_MODEL_PIXELS
from digitpipe.runtime.reader import DEFAULT_MIN_CONFIDENCE, Reading, parse_roi

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL_FAILED = 0, 1, 2, 3
KEY_QUIT = {ord("q"), 27}  # q or Esc
KEY_PAUSE = ord(" ")
KEY_SNAPSHOT = ord("s")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except None: the help text says what leaving the option out does."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-digit", description="Read digits with an ONNX model from images, a video file or a camera.",
        epilog="exit codes: 0 all inputs read, 1 some inputs failed (the rest were read), 2 usage or model error "
               "(nothing read), 3 the model failed while reading (what was read before is printed)",
        formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", nargs="+", metavar="PATH", help="image files or folders of images")
    src.add_argument("--video", metavar="FILE", help="a video file")
    src.add_argument("--camera", type=int, metavar="INDEX", help="a camera index (0 is the first camera)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"ONNX file written by `make export` (default: {TRAINED_MODEL} when it exists, "
                                   f"else the model bundled with digitpipe, {bundled_model()})")
    g.add_argument("--detector", default="auto", metavar="ONNX|auto|none",
                   help=f"ink detector run before the finder (`make export` writes it); auto: {DETECTOR_NAME} beside "
                        f"the --model file when it exists ({DETECTOR_INT8_NAME} first beside an INT8 model), else the "
                        "finder's rules alone; none: the rules alone")
    g.add_argument("--sequence", default="auto", metavar="ONNX|auto|none",
                   help=f"sequence reader of touching digits (`make export` writes it); auto: {SEQUENCE_NAME} beside "
                        "the --model file when it exists; none: touching digits are only cut apart")
    g.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "opencv"], help="inference engine")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto uses CUDA through onnxruntime when a GPU is present")
    g.add_argument("--check-model", nargs="?", const=True, default=False, metavar="REPORT",
                   help="refuse a model whose bytes differ from its export report (default REPORT: beside the model)")
    g.add_argument("--max-model-pixels", type=int, default=DEFAULT_MAX_MODEL_PIXELS, metavar="N",
                   help="refuse a model that declares a larger input (width x height, times a fixed batch)")
    g = p.add_argument_group("models without digitpipe metadata (these also override a digitpipe file's)")
    g.add_argument("--mean", help="per-channel mean on the 0..1 pixel scale, e.g. 0.1307 or 0.485,0.456,0.406")
    g.add_argument("--std", help="per-channel std on the 0..1 pixel scale, e.g. 0.3081")
    g.add_argument("--labels", help="class names in output order, comma-separated (default: class numbers)")
    g.add_argument("--size", help="input size N or WxH (default: the graph's input size)")
    g.add_argument("--rgb", action="store_true", help="the model takes RGB (default for 3 channels: BGR)")
    g.add_argument("--fit", choices=["digit", "resize"],
                   help="find digits in the photo, or resize the whole image (default: digit for 1 channel)")
    g = p.add_argument_group("reading")
    g.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                   help="digits below this softmax confidence are not reported")
    g.add_argument("--single", action="store_true", help="read only the most prominent digit")
    g.add_argument("--roi", metavar="X,Y,W,H", help="read only inside this box (pixels); boxes stay in image coordinates")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images that declare more pixels than this, before decoding them")
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="one JSON object per image or frame on stdout")
    g.add_argument("--speak", action="store_true", help="say the reading aloud (pyttsx3 / espeak-ng)")
    g.add_argument("--no-window", action="store_true", help="never open a window (none opens without a display)")
    g.add_argument("--save", metavar="OUT.mp4", help="with --video or --camera, write the annotated frames (.mp4 .avi .mkv .mov)")
    g.add_argument("--delay", type=int, default=0, metavar="MS",
                   help="with a window, show each image this long (0 = until a key is pressed)")
    return p


class Output:
    """Readable lines, or JSON lines (results on stdout, errors also on stderr)."""

    def __init__(self, json_lines: bool):
        self.json_lines = json_lines

    def result(self, source: str, reading: Reading, **extra) -> None:
        if self.json_lines:
            print(json.dumps({"source": source, **extra, **reading.to_dict()}), flush=True)
        else:
            detail = ", ".join(f"{d.label} {d.confidence:.1%}" for d in reading.digits)
            print(f"{source}: {reading.text or 'no digit'}" + (f"  ({detail})" if detail else ""), flush=True)

    def error(self, source: str, message: str) -> None:
        if self.json_lines:
            print(json.dumps({"source": source, "error": message}), flush=True)
        print(f"run-digit: {message}", file=sys.stderr, flush=True)


def usage_error(message) -> int:
    print(f"run-digit: error: {first_line(message) if isinstance(message, BaseException) else message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.min_confidence <= 1.0:
        return usage_error("--min-confidence must be between 0 and 1")
    if args.max_model_pixels < 1:
        return usage_error("--max-model-pixels must be at least 1")
    try:
        roi = parse_roi(args.roi) if args.roi else None
        overrides = Overrides(
            mean=parse_numbers(args.mean, "--mean") if args.mean else None,
            std=parse_numbers(args.std, "--std") if args.std else None,
            labels=tuple(args.labels.split(",")) if args.labels else None,
            size=parse_size(args.size) if args.size else None, rgb=args.rgb, fit=args.fit)
    except ValueError as exc:
        return usage_error(exc)
    if args.save and args.image:
        return usage_error("--save is for --video and --camera")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our messages, not OpenCV's
    try:
        reader = Reader(args.model or default_model(), backend=args.backend, device=args.device,
                        detector=args.detector, sequence=args.sequence, min_confidence=args.min_confidence,
                        single=args.single, roi=roi,
                        check_model=args.check_model, max_pixels=args.max_pixels,
                        max_model_pixels=args.max_model_pixels, overrides=overrides)
    except ModelError as exc:
        return usage_error(exc)
    out = Output(args.json)
    window = _open_window(args)
    try:
        if args.image:
            return read_images(args.image, reader, out, window, args)
        return read_stream(args, reader, out, window)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return EXIT_OK
    finally:
        if window is not None:
            window.close()


def _open_window(args):
    from digitpipe.runtime.display import Window, display_problem

    if args.no_window:
        return None
    problem = display_problem()
    if problem == "no display":  # a server or a pipeline: reading without a window is the norm
        return None
    if problem:
        print(f"run-digit: warning: no window ({problem})", file=sys.stderr)
        return None
    try:
        return Window()
    except cv2.error as exc:
        print(f"run-digit: warning: no window ({str(exc).strip().splitlines()[-1]})", file=sys.stderr)
        return None


def read_images(paths: list[str], reader: Reader, out: Output, window, args) -> int:
    from digitpipe.runtime.display import annotate
    from digitpipe.runtime.sources import expand_paths

    speaker = _speaker(args, threaded=False)
    failed = 0
    for name, path in expand_paths(paths):
        try:
            if isinstance(path, InputError):
                raise path
            image = reader.load(path)  # its errors name the file already
        except InputError as exc:
            out.error(name, str(exc))
            failed += 1
            continue
        try:
            reading = reader.read(image)
        except InputError as exc:  # a --roi outside this image
            out.error(name, f"{name}: {exc}")
            failed += 1
            continue
        except ModelError as exc:  # the model, not this image: the next would fail alike
            out.error(name, f"{name}: {first_line(exc)}")
            return EXIT_MODEL_FAILED
        out.result(name, reading)
        if speaker:
            speaker.say(reading.text)
        if window is not None:
            if window.show(annotate(image, reading, roi=reader.roi), args.delay) in KEY_QUIT:
                window.close()
                window = None
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def read_stream(args, reader: Reader, out: Output, window) -> int:
    from digitpipe.runtime.recording import VideoRecorder
    from digitpipe.runtime.sources import open_camera, open_video
    from digitpipe.runtime.speech import SpeakOnChange

    try:
        source = open_camera(args.camera) if args.video is None else open_video(args.video)
    except InputError as exc:
        out.error(args.video or f"camera {args.camera}", str(exc))
        return EXIT_INPUT_FAILED
    try:
        recorder = VideoRecorder(args.save, source.fps) if args.save else None
    except InputError as exc:
        return usage_error(exc)
    speech = _speaker(args, threaded=True)
    on_change = SpeakOnChange(speech.say) if speech else None
    try:
        return _stream_loop(args, source, reader, out, window, recorder, on_change)
    except InputError as exc:
        out.error(source.name, f"{source.name}: {exc}")
        return EXIT_INPUT_FAILED
    finally:
        if recorder:
            recorder.close()
        if speech:
            speech.close()


def smoothed_fps(previous: float | None, seconds: float) -> float:
    """Frames per second, averaged over recent frames; the first frame's rate starts the
    average (starting from 0 would show a tenth of the real rate on the first frame)."""
    rate = 1.0 / max(seconds, 1e-6)
    return rate if previous is None else 0.9 * previous + 0.1 * rate


def _stream_loop(args, source, reader: Reader, out: Output, window, recorder, on_change) -> int:
    from digitpipe.runtime.display import annotate

    last_text, fps, t_prev = None, None, time.perf_counter()
    frame_ms = 1000.0 / source.fps
    stream = reader.read_stream(source)  # the next frame's ink detector runs beside this frame
    for index in itertools.count():
        started = time.perf_counter()
        try:
            frame, reading = next(stream)
        except StopIteration:
            break
        except ModelError as exc:  # ends the stream; the frames read before it stand (and are saved)
            out.error(source.name, f"{source.name}: stopped at frame {index}: {first_line(exc)}")
            return EXIT_MODEL_FAILED
        now = time.perf_counter()
        fps = smoothed_fps(fps, now - t_prev)
        t_prev = now
        if args.json:
            out.result(source.name, reading, frame=index)
        elif reading.text != last_text:
            out.result(f"{source.name} frame {index}", reading)
        last_text = reading.text
        if on_change:
            on_change.update(reading.text)
        if window is None and recorder is None:
            continue
        status = f"{fps:.0f} FPS  infer {reading.ms['infer']:.2f} ms"
        if recorder:
            recorder.write(annotate(frame, reading, status, roi=reader.roi, fit=False))
        if window is not None:
            shown = annotate(frame, reading, status, roi=reader.roi)
            # A video file in a window plays at its own frame rate; headless runs go flat out.
            wait = 1 if source.is_camera else max(1, int(frame_ms - (time.perf_counter() - started) * 1e3))
            key = window.show(shown, wait)
            if key == KEY_PAUSE:
                key = _paused(window, annotate(frame, reading, status + "  (paused: space resumes)", roi=reader.roi))
            if key == KEY_SNAPSHOT:
                snapshot = f"snapshot-{index:06d}.png"
                cv2.imwrite(snapshot, shown)
                print(f"run-digit: saved {snapshot}", file=sys.stderr)
            if key in KEY_QUIT or window.closed():
                break
    stream.close()
    if source.ended_early:
        if source.count == 0:
            out.error(source.name, f"{source.name}: {source.ended_early}")
            return EXIT_INPUT_FAILED
        print(f"run-digit: {source.name}: {source.ended_early}", file=sys.stderr)
        return EXIT_OK if source.is_camera else EXIT_INPUT_FAILED
    return EXIT_OK


def _paused(window, frame) -> int:
    """Hold the frame until space resumes (returns -1) or a quit key (returned)."""
    while True:
        key = window.show(frame, 100)
        if key == KEY_PAUSE:
            return -1
        if key in KEY_QUIT or window.closed():
            return key if key in KEY_QUIT else ord("q")


def _speaker(args, threaded: bool):
    if not args.speak:
        return None
    from digitpipe.runtime.speech import Speaker, SpeechThread

    return SpeechThread() if threaded else Speaker()


def run() -> None:
    """Console entry point: main(), then exit without the interpreter's teardown.

    Unloading onnxruntime, OpenCV and numpy at exit costs 30-45 ms here, about a fifth of
    run-digit's cold start; by then every output is flushed and every window and thread closed.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # reader went away, or stderr closed after a broken pipe
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
