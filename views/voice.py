"""Voice: a guided session of spoken digits (browser microphone, server microphone, or uploads)."""
import random

import streamlit as st

from fineprune.person.recordings import decode_input, ingest_files
from studio import clips, figures, models, state, tryit, ui
from studio.microphone import record_server_microphone, server_microphone

TAKE_LENGTH = 5  # digits asked for in one long take


def take_in_recording(session, rec, name, bundle, data: bytes, *, label, source, split=False, labels=None) -> bool:
    """Decode one recording into clips; False (and a message) when it cannot be used."""
    with ui.friendly_errors("Reading the recording"):
        pieces = decode_input("voice", data, bundle.card, split=split, name="the recording")
        if split:
            if labels is not None and len(pieces) == len(labels):
                chosen = list(labels)
                session.say("success", f"Heard {len(pieces)} digits: {' '.join(chosen)}.")
            else:
                chosen = [None] * len(pieces)
                session.say("warning", f"Heard {len(pieces)} digits where {len(labels or [])} were asked for, so their "
                            "labels are left empty. They still count for adaptation (which needs no labels); "
                            "label them below to use them as check clips.")
            added = rec.add_many(pieces, labels=chosen, source=source)
        else:
            added = rec.add_many(pieces, labels=[label], source=source)
        clips.select_clip(name, added[-1].id)
        return True
    return False


def guided_ui(session, rec, name, bundle) -> None:
    takes = st.number_input("Takes per digit", 1, 10, 3, key="voice_takes",
                            help="Each digit is asked for this many times, in shuffled order.")
    prompt = session.next_prompt(name, bundle.classes, int(takes))
    left = len(session.prompts.get(name, []))
    ui.big_prompt(f"Say “{prompt}”", f"{left} prompt{'s' * (left != 1)} left in this round · press the microphone, speak, stop")
    widget = session.widget_key(f"voice_prompt_{name}")
    audio = st.audio_input(f"Record “{prompt}”", sample_rate=8000, key=widget)
    data = clips.new_file(session, audio)
    if data is not None and take_in_recording(session, rec, name, bundle, data, label=prompt, source="microphone"):
        session.prompt_done(name)
        session.reset_widget(f"voice_prompt_{name}")
        st.rerun()
    if st.button("Skip this digit", key="voice_skip"):
        session.prompt_done(name)
        st.rerun()


def long_take_ui(session, rec, name, bundle) -> None:
    key = f"voice_take_digits_{name}"
    if key not in st.session_state:
        st.session_state[key] = random.Random(session.seed).choices(bundle.classes, k=TAKE_LENGTH)
    digits = st.session_state[key]
    ui.big_prompt("Say: " + " · ".join(digits), "one take, a short pause between the digits; the app cuts it into clips")
    widget = session.widget_key(f"voice_take_{name}")
    audio = st.audio_input("Record the whole take", sample_rate=8000, key=widget)
    data = clips.new_file(session, audio)
    if data is not None and take_in_recording(session, rec, name, bundle, data, label=None, source="long take",
                                              split=True, labels=digits):
        st.session_state[key] = random.Random(session.seed + len(rec)).choices(bundle.classes, k=TAKE_LENGTH)
        session.reset_widget(f"voice_take_{name}")
        st.rerun()
    if st.button("New digits", key="voice_take_new"):
        st.session_state[key] = random.Random().choices(bundle.classes, k=TAKE_LENGTH)
        st.rerun()


def upload_ui(session, rec, name, bundle) -> None:
    st.write("WAV files or a zip of them (folders inside are fine). A file named like `7_anything.wav` is labelled 7.")
    split = st.checkbox("Files may hold several digits: cut them into clips", key="voice_upload_split")
    widget = session.widget_key(f"voice_upload_{name}")
    files = st.file_uploader("WAV or zip files", type=["wav", "zip"], accept_multiple_files=True, key=widget)
    fresh = [(f.name, data) for f in files or [] if (data := clips.new_file(session, f)) is not None]
    if fresh:
        with ui.friendly_errors("Reading the upload"):
            added, problems = ingest_files(rec, "voice", bundle.card, fresh, split=split, source="upload")
            clips.report_upload(session, added, problems, name)
        session.reset_widget(f"voice_upload_{name}")
        st.rerun()


def server_mic_ui(session, rec, name, bundle) -> None:
    device = server_microphone()
    if device is None:
        st.info("This server has no microphone (or no sound system), so local capture is off. "
                "Use the browser recorder in the first tab: it records on *your* device.", icon="ℹ")
        return
    prompt = session.next_prompt(name, bundle.classes, int(st.session_state.get("voice_takes", 3)))
    st.write(f"Records on the machine running the Studio: **{device}**.")
    seconds = st.slider("Seconds", 1.0, 5.0, 1.5, 0.5, key="voice_server_seconds")
    if st.button(f"Record “{prompt}” on the server microphone", key="voice_server_record"):
        with ui.friendly_errors("Recording"), st.spinner(f"Recording {seconds:.1f} s… say “{prompt}”"):
            data = record_server_microphone(seconds)
            if take_in_recording(session, rec, name, bundle, data, label=prompt, source="server microphone"):
                session.prompt_done(name)
                st.rerun()


def draw_voice_clip(clip, bundle) -> None:
    d = clip.decoded
    a, b = st.columns(2)
    if getattr(d, "waveform", None) is not None:  # a clip decoded elsewhere may have no waveform
        a.plotly_chart(figures.waveform_figure(d.waveform, d.sample_rate, f"Clip #{clip.id}: waveform"), key=f"wave_{clip.id}", theme=None)
        st.audio(d.waveform, sample_rate=d.sample_rate)
    features = bundle.card.get("features") or {}
    hop = features.get("hop_length", 128) / features.get("sample_rate", 8000)
    b.plotly_chart(figures.logmel_figure(clip.features, hop_seconds=hop, title=f"Clip #{clip.id}: log-mel (model input)"),
                   key=f"mel_{clip.id}", theme=None)


def rerecord_voice(session, rec, name, bundle, clip) -> None:
    widget = session.widget_key(f"voice_rerecord_{name}_{clip.id}")
    audio = st.audio_input(f"Re-record clip #{clip.id}" + (f" (say “{clip.label}”)" if clip.label else ""),
                           sample_rate=8000, key=widget)
    data = clips.new_file(session, audio)
    if data is not None:
        with ui.friendly_errors("Reading the recording"):
            rec.replace(clip.id, decode_input("voice", data, bundle.card, name="the recording")[0], source="microphone (re-recorded)")
            session.reset_widget(f"voice_rerecord_{name}_{clip.id}")
            st.rerun()


def voice_ui() -> None:
    session = state.get()
    st.title("Your voice")
    name = models.pick_model("voice", "Voice model")
    if name is None:
        ui.no_model_note("voice")
        return
    bundle = models.bundle_for(name)
    rec = session.recordings_for(name, bundle.classes)
    st.caption("Recordings stay in this app's memory; nothing is written to disk or sent anywhere. "
               f"At most {rec.max_clips} clips per session, one digit at most 10 s, a take at most 2 minutes.")
    ui.show_flash(session)

    guided, take, upload, server = st.tabs(["Guided", "Long take", "Upload", "Server microphone"])
    with guided:
        guided_ui(session, rec, name, bundle)
    with take:
        long_take_ui(session, rec, name, bundle)
    with upload:
        upload_ui(session, rec, name, bundle)
    with server:
        server_mic_ui(session, rec, name, bundle)
    if session.run is not None:
        with st.expander("Try it: your personalized model vs the general one", expanded=True):
            tryit.panel(session, key="voice", domain="voice")

    clips.collection_ui(
        session, name, rec, bundle, unit="clip", counts_title="Clips per digit",
        empty_note="No clips yet. Record a few digits above, or run the demo from the Home page.",
        describe=lambda c: f"{len(c.decoded.waveform) / c.decoded.sample_rate:.2f} s"
        if getattr(c.decoded, "waveform", None) is not None else "",
        draw=lambda c: draw_voice_clip(c, bundle), rerecord=lambda c: rerecord_voice(session, rec, name, bundle, c),
        next_label="Next: fine-prune the model to your voice",
    )

voice_ui()
