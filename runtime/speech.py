"""Spoken results through pyttsx3 (espeak-ng on Linux), imported only when asked for."""
from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import sys
import threading

from digitpipe.runtime.errors import first_line


def phrase(text: str) -> str:
    return text if text else "no digit"


def playback_problem() -> str | None:
    """Why spoken audio cannot be heard here, or None. pyttsx3 plays through `aplay` on Linux."""
    if not sys.platform.startswith("linux"):
        return None
    if shutil.which("aplay") is None:
        return "no `aplay` to play audio (install alsa-utils)"
    if not os.path.isdir("/dev/snd"):
        return "no sound device (/dev/snd)"
    return None


class Speaker:
    """Says readings aloud; if speech cannot start, warns once and stays silent.

    play=False is for writing WAV files only, which needs no sound device.
    """

    def __init__(self, warn=lambda msg: print(msg, file=sys.stderr), play: bool = True):
        self._warn = warn
        self.engine = None
        self.error: str | None = playback_problem() if play else None
        if self.error:
            self._warn(f"warning: speech is off: {self.error}; results are still printed")
            return
        try:
            import pyttsx3

            with contextlib.redirect_stdout(io.StringIO()):
                self.engine = pyttsx3.init()
        except Exception as exc:  # no espeak-ng, no audio stack, no pyttsx3: all mean "no speech"
            self.error = first_line(exc)
            self._warn(f"warning: speech is off: {self.error}; install espeak-ng and pyttsx3 for --speak")

    @property
    def available(self) -> bool:
        return self.engine is not None

    def say(self, text: str) -> None:
        self._run(lambda: self.engine.say(phrase(text)))

    def save(self, text: str, wav_path: str) -> None:
        """Write the spoken reading to a WAV file instead of the speakers."""
        self._run(lambda: self.engine.save_to_file(phrase(text), wav_path))

    def _run(self, queue) -> None:
        if self.engine is None:
            return
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pyttsx3 prints progress on stdout
                queue()
                self.engine.runAndWait()
        except Exception as exc:
            self.engine = None
            self._warn(f"warning: speech stopped ({first_line(exc)})")


class SpeakOnChange:
    """Speak a live reading only when it changed and held still for `stable` frames."""

    def __init__(self, speak, stable: int = 5):
        self.speak, self.stable = speak, stable
        self.candidate, self.count, self.spoken = None, 0, None

    def update(self, text: str) -> bool:
        if text == self.candidate:
            self.count += 1
        else:
            self.candidate, self.count = text, 1
        if self.count == self.stable and text != self.spoken:
            self.spoken = text  # a stable blank re-arms speech for the same number later
            if text:
                self.speak(text)
                return True
        return False


class SpeechThread:
    """Speaks off the frame loop: the engine lives in its own thread, the newest text wins."""

    def __init__(self, warn=lambda msg: print(msg, file=sys.stderr)):
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._ready = threading.Event()
        self._warn = warn
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)

    def _work(self) -> None:
        speaker = Speaker(self._warn)
        self._ready.set()
        while True:
            text = self._queue.get()
            if text is None:
                return
            speaker.say(text)

    def say(self, text: str | None) -> None:
        try:
            self._queue.get_nowait()  # drop a reading that was never spoken: it is stale
        except queue.Empty:
            pass
        self._queue.put_nowait(text)

    def close(self, timeout: float = 5.0) -> None:
        self.say(None)
        self._thread.join(timeout)
