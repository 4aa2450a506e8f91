import wave

import numpy as np
import pytest

from digitpipe.runtime.speech import SpeakOnChange, Speaker, phrase
from tests.system_packages import require


def test_spoken_reading_is_real_audio(tmp_path):
    require("espeak-ng")
    speaker = Speaker(play=False)
    if not speaker.available:
        pytest.fail(f"pyttsx3/espeak-ng did not start: {speaker.error}")
    path = tmp_path / "reading.wav"
    speaker.save("2026", str(path))
    with wave.open(str(path)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
        assert w.getsampwidth() == 2
    samples = np.frombuffer(frames, dtype=np.int16).astype(np.float64)
    seconds = len(samples) / rate
    rms = np.sqrt(np.mean(samples**2))
    assert 0.3 < seconds < 10, seconds
    assert rms > 300, f"audio is near-silent (rms {rms:.0f})"
    # Speech has pauses: the loudest 50 ms window is far above the quietest.
    windows = samples[: len(samples) // 1102 * 1102].reshape(-1, 1102)
    energy = np.sqrt((windows**2).mean(1))
    assert energy.max() > 10 * max(energy.min(), 1.0)


def test_blank_reading_is_spoken_as_no_digit():
    assert phrase("") == "no digit" and phrase("42") == "42"


def test_speaks_only_stable_changes():
    said = []
    rule = SpeakOnChange(said.append, stable=3)
    stream = ["7", "7", "1", "7", "7", "7", "7", "7", "", "", "", "7", "7", "7", "3", "3", "3", "3"]
    for text in stream:
        rule.update(text)
    # 7 once when stable (not on the flicker to 1), never again while it stays, again after
    # a stable blank, then 3.
    assert said == ["7", "7", "3"]


def test_missing_player_warns_once_and_stays_silent(monkeypatch):
    import digitpipe.runtime.speech as speech

    warnings = []
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    monkeypatch.setattr(speech.sys, "platform", "linux")
    s = Speaker(warn=warnings.append)
    s.say("7")
    assert not s.available and len(warnings) == 1 and "aplay" in warnings[0]
