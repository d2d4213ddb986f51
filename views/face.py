"""Face: a guided session of facial expressions (browser camera, or photo uploads)."""
import streamlit as st

from studio import clips, figures, models, state, tryit, ui


def camera_ui(session, rec, name, bundle) -> None:
    if tryit.camera_in_use("face"):
        st.info("The camera is in use by Try it below; switch it off there to take photos here again.")
        return
    takes = st.number_input("Photos per expression", 1, 10, 2, key="face_takes")
    clips.prompted_photo_ui(session, rec, "face", name, bundle, bundle.classes, int(takes),
                            hint="look at the camera and take the photo", skip_label="Skip this expression")


def draw_face_clip(clip) -> None:
    d = clip.decoded
    a, b = st.columns([3, 2])
    if getattr(d, "photo", None) is not None:  # a clip decoded elsewhere may have no preview
        a.image(figures.photo_with_box(d.photo, d.box), caption=f"Photo #{clip.id} with the detected face", width="stretch")
    if getattr(d, "crop", None) is not None:
        b.image(figures.enlarge(d.crop, 4), caption="The 48×48 crop the model sees (equalised)", width=192)


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
        clips.photo_upload_ui(session, rec, "face", name, bundle, "A file named like `happy_1.jpg` is labelled *happy*.")
    if session.run is not None:
        with st.expander("Try it: your personalized model vs the general one", expanded=True):
            tryit.panel(session, key="face", domain="face")

    clips.collection_ui(
        session, name, rec, bundle, unit="photo", counts_title="Photos per expression",
        empty_note="No photos yet. Take a few above.",
        describe=lambda c: "; ".join(c.decoded.notes) if c.decoded is not None else "",
        draw=draw_face_clip, rerecord=lambda c: clips.retake_photo(session, rec, "face", name, bundle, c),
        next_label="Next: fine-prune the model to your face", gallery=True,
    )

face_ui()
