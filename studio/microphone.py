"""Local capture on the server's own microphone with ``sounddevice`` -- only when it has one.

On a machine without a sound card (a server, a container) PortAudio is missing or lists no
input device; ``sounddevice`` then raises ``OSError`` on import or ``PortAudioError`` on use.
Every such failure means "no server microphone": the page hides the recorder with a note.
Recordings are encoded to WAV bytes in memory, like the browser's, and never touch the disk.
"""
from __future__ import annotations

import streamlit as st

from fineprune.errors import AudioError

RATE = 8000


@st.cache_data(ttl=300, show_spinner=False)
def server_microphone() -> str | None:
    """Name of the default input device, or None when there is none (any failure counts as none)."""
    try:
        import sounddevice as sd

        info = sd.query_devices(kind="input")
        if not info or int(info.get("max_input_channels", 0)) < 1:
            return None
        return str(info.get("name") or "default input")
    except Exception:  # OSError (no PortAudio), sd.PortAudioError (no device), ValueError, ...
        return None


def record_server_microphone(seconds: float) -> bytes:
    """Record ``seconds`` of mono 8 kHz audio; WAV bytes. Raises ``AudioError`` when capture fails."""
    try:
        import sounddevice as sd

        samples = sd.rec(int(seconds * RATE), samplerate=RATE, channels=1, dtype="float32")
        sd.wait()
    except Exception as exc:
        raise AudioError(f"the server microphone could not record ({type(exc).__name__}: {str(exc)[:80]})") from None
    from fineprune.domains.audio import encode_wav

    return encode_wav(samples[:, 0], RATE)
