"""Objects: show the camera a few kinds of things you own (or upload photos); the 1000-class
ImageNet model becomes yours."""
import streamlit as st

from studio import clips, models, state, tryit, ui

DOMAIN = "objects"


def kinds_ui(name: str, bundle) -> list[str]:
    """The few kinds of things this person will show (the prompts cycle over them)."""
    key, kept = f"object_kinds_{name}", f"object_kinds_kept_{name}"
    if key not in st.session_state:  # Streamlit forgets a widget's value while its page is not shown
        st.session_state[key] = list(st.session_state.get(kept, []))
    chosen = st.multiselect(
        "Which kinds of things will you show? (type to search the model's 1000 classes)", bundle.classes, key=key,
        max_selections=10, help="Pick 2-5 kinds you own, e.g. coffee mug, remote control, golden retriever. "
                                "Personalization works without labels; the kinds only drive the prompts.",
    )
    st.session_state[kept] = list(chosen)
    return chosen


def camera_ui(session, rec, name, bundle, kinds: list[str]) -> None:
    if tryit.camera_in_use(DOMAIN):
        st.info("The camera is in use by Try it below; switch it off there to take photos here again.")
        return
    if not kinds:
        st.info("Choose the kinds of things you will show above; then the camera asks for each in turn.")
        return
    takes = st.number_input("Photos per kind", 1, 20, 4, key="objects_takes")
    clips.prompted_photo_ui(session, rec, DOMAIN, name, bundle, kinds, int(takes),
                            hint="fill the frame with it", skip_label="Skip this one")


def draw_object_clip(clip) -> None:
    d = clip.decoded
    a, b = st.columns([3, 2])
    if getattr(d, "preview", None) is not None:  # a clip decoded elsewhere may have no preview
        a.image(d.preview, caption=f"Photo #{clip.id}", width="stretch")
    if getattr(d, "crop", None) is not None:
        b.image(d.crop, caption="The centre square the model sees (224×224)", width=192)


def objects_ui() -> None:
    session = state.get()
    st.title("Your things")
    name = models.pick_model(DOMAIN, "Objects model")
    if name is None:
        ui.no_model_note(DOMAIN)
        return
    bundle = models.bundle_for(name)
    rec = session.recordings_for(name, bundle.classes)
    st.caption("Photos stay in this app's memory (a small preview and the 224×224 square the model sees); "
               f"nothing is written to disk or sent anywhere. At most {rec.max_clips} photos per session.")
    ui.show_flash(session)
    kinds = kinds_ui(name, bundle)

    camera, upload = st.tabs(["Camera", "Upload"])
    with camera:
        camera_ui(session, rec, name, bundle, kinds)
    with upload:
        clips.photo_upload_ui(session, rec, DOMAIN, name, bundle, "A file named like `coffee-mug_1.jpg` or by its "
                              "ImageNet synset (`n03063599_1.jpg`) is labelled; other names are fine too (adaptation needs no labels).")
    if session.run is not None:
        with st.expander("Try it: your personalized model vs the general one", expanded=True):
            tryit.panel(session, key=DOMAIN, domain=DOMAIN)

    clips.collection_ui(
        session, name, rec, bundle, unit="photo", counts_title="Photos per kind",
        empty_note="No photos yet. Choose a few kinds of things and take photos of them above.",
        describe=lambda c: "; ".join(c.decoded.notes) if c.decoded is not None else "",
        draw=draw_object_clip, rerecord=lambda c: clips.retake_photo(session, rec, DOMAIN, name, bundle, c),
        next_label="Next: fine-prune the model to your things", gallery=True,
    )


objects_ui()
