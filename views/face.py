"""Face: a guided session of facial expressions (browser camera, or photo uploads)."""
import streamlit as st

from fineprune.person.recordings import decode_input, ingest_files
from studio import clips, figures, models, state, tryit, ui


def take_in_photo(session, rec, name, bundle, data: bytes, *, label, source) -> bool:
    with ui.friendly_errors("Reading the photo"):
        decoded = decode_input("face", data, bundle.card, name="the photo")[0]
        clip = rec.add(decoded, label=label, source=source)
        for note in decoded.notes:
            session.say("info", f"Photo #{clip.id}: {note}.")
        clips.select_clip(name, clip.id)
        return True
    return False


def camera_ui(session, rec, name, bundle) -> None:
    if tryit.camera_in_use("face"):
        st.info("The camera is in use by Try it below; switch it off there to take photos here again.")
        return
    takes = st.number_input("Photos per expression", 1, 10, 2, key="face_takes")
    prompt = session.next_prompt(name, bundle.classes, int(takes))
    left = len(session.prompts.get(name, []))
    ui.big_prompt(f"Show “{prompt}”", f"{left} prompt{'s' * (left != 1)} left in this round · look at the camera and take the photo")
    widget = session.widget_key(f"face_camera_{name}")
    photo = st.camera_input(f"Take a photo: {prompt}", key=widget)
    data = clips.new_file(session, photo)
    if data is not None and take_in_photo(session, rec, name, bundle, data, label=prompt, source="camera"):
        session.prompt_done(name)
        session.reset_widget(f"face_camera_{name}")
        st.rerun()
    if st.button("Skip this expression", key="face_skip"):
        session.prompt_done(name)
        st.rerun()


def upload_ui(session, rec, name, bundle) -> None:
    st.write("Photos (JPEG, PNG, WebP, …) or a zip of them. A file named like `happy_1.jpg` is labelled *happy*.")
    widget = session.widget_key(f"face_upload_{name}")
    files = st.file_uploader("Photos or zip files", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "zip"],
                             accept_multiple_files=True, key=widget)
    fresh = [(f.name, data) for f in files or [] if (data := clips.new_file(session, f)) is not None]
    if fresh:
        with ui.friendly_errors("Reading the upload"):
            added, problems = ingest_files(rec, "face", bundle.card, fresh, source="upload")
            clips.report_upload(session, added, problems, name)
        session.reset_widget(f"face_upload_{name}")
        st.rerun()


def draw_face_clip(clip) -> None:
    d = clip.decoded
    a, b = st.columns([3, 2])
    if getattr(d, "photo", None) is not None:  # a clip decoded elsewhere may have no preview
        a.image(figures.photo_with_box(d.photo, d.box), caption=f"Photo #{clip.id} with the detected face", width="stretch")
    if getattr(d, "crop", None) is not None:
        b.image(figures.enlarge(d.crop, 4), caption="The 48×48 crop the model sees (equalised)", width=192)


def retake_face(session, rec, name, bundle, clip) -> None:
    widget = session.widget_key(f"face_retake_{name}_{clip.id}")
    with st.expander(f"Retake photo #{clip.id}"):
        photo = st.camera_input("Retake" + (f": {clip.label}" if clip.label else ""), key=widget)
        data = clips.new_file(session, photo)
        if data is not None:
            with ui.friendly_errors("Reading the photo"):
                rec.replace(clip.id, decode_input("face", data, bundle.card, name="the photo")[0], source="camera (retaken)")
                session.reset_widget(f"face_retake_{name}_{clip.id}")
                st.rerun()


def face_ui() -> None:
    session = state.get()
    st.title("Your face")
    name = models.pick_model("face", "Face model")
    if name is None:
        ui.no_model_note("face")
        return
    bundle = models.bundle_for(name)
    rec = session.recordings_for(name, bundle.classes)
    st.caption("Photos stay in this app's memory; only a small gray preview and the 48×48 crop are kept, "
               f"nothing is written to disk or sent anywhere. At most {rec.max_clips} photos per session.")
    ui.show_flash(session)

    camera, upload = st.tabs(["Camera", "Upload"])
    with camera:
        camera_ui(session, rec, name, bundle)
    with upload:
        upload_ui(session, rec, name, bundle)
    if session.run is not None:
        with st.expander("Try it: your personalized model vs the general one", expanded=True):
            tryit.panel(session, key="face", domain="face")

    clips.collection_ui(
        session, name, rec, bundle, unit="photo", counts_title="Photos per expression",
        empty_note="No photos yet. Take a few above.",
        describe=lambda c: "; ".join(c.decoded.notes) if c.decoded is not None else "",
        draw=draw_face_clip, rerecord=lambda c: retake_face(session, rec, name, bundle, c),
        next_label="Next: fine-prune the model to your face", gallery=True,
    )

face_ui()
