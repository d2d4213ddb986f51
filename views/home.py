"""Home: fine-pruning in one picture, and a one-click demo that needs no microphone or camera."""
import streamlit as st

from fineprune.person.options import settings_for
from studio import figures, models, projects, state, ui
from studio.actions import start_personalization


def demo_choice() -> tuple[str, list[str]] | None:
    """(model, its demo individuals) for the one-click demo: the first model that ships some."""
    for name in models.model_specs():
        demos = models.demo_names(name)
        if demos:
            return name, demos
    return None


def home_ui() -> None:
    session = state.get()
    st.title("✂ Fine-Pruning Studio")
    st.markdown(
        "#### Make a general speech, face or object model *yours*, without labels and without training: "
        "let it listen to you, measure which connections your data actually uses, and cut the rest."
    )
    st.image(figures.pipeline_svg(), width="stretch")
    ui.show_flash(session)

    left, right = st.columns([3, 2], gap="large")
    with left:
        st.subheader("▶ Try it in one click")
        choice = demo_choice()
        if choice is None:
            st.info("No demo individuals are installed (assets/demo/ is empty), so the one-click demo is off. "
                    "Record your own clips on the Voice or Face page instead.")
        else:
            name, demos = choice
            default = models.default_demo(name)
            individual = st.selectbox("Demo individual (synthetic, shipped with the app)", demos, key="home_demo",
                                      index=demos.index(default) if default in demos else 0)
            st.write(f"Personalizes the **{name}** model to **{individual}**, using half of their clips without labels, "
                     "and scores the other half before and after. No microphone needed; about half a minute.")
            card = models.demo_card(name, individual)
            if card.get("about"):
                st.caption(f"{individual} {card['about']}.")
            measured = card.get("measured") or {}
            if measured.get("accuracy_before") is not None and measured.get("accuracy_after") is not None:
                st.caption(f"Measured with the default settings: {ui.pct(measured['accuracy_before'])} → "
                           f"{ui.pct(measured['accuracy_after'])} at {ui.pct(measured.get('sparsity'))} of the weights pruned.")
            if st.button("Run the demo", type="primary", icon="▶", disabled=session.jobs.running, key="run_demo"):
                with ui.friendly_errors("The demo"):
                    bundle = models.bundle_for(name)
                    start_personalization(session, name, individual, settings_for(bundle.card))
                    st.session_state["fp_model"] = name  # the Fine-prune page shows what is running
                    st.session_state[f"individual_{name}"] = individual
                    st.switch_page("views/fine_prune.py")
    with right:
        st.subheader("Or use your own")
        st.page_link("views/voice.py", label="Record your voice digits", icon="☎")
        st.page_link("views/face.py", label="Take photos of your expressions", icon="☺")
        st.page_link("views/objects.py", label="Show the camera a few things you own", icon="☕")
        st.page_link("views/fine_prune.py", label="Fine-prune and see the result", icon="✂")
        st.page_link("views/explore.py", label="Explore sparsity, criteria and baselines", icon="⚖")
        st.caption("Everything you record stays in this app's memory on this machine; nothing is saved "
                   "to disk or sent anywhere unless you download it on the Export page.")

    with st.expander("Save or open a project"):
        projects.panel(session, key="home")

    with st.expander("How does fine-pruning work?"):
        st.markdown(
            "1. The **general model** was trained once on many people.\n"
            "2. You give it **a few of your own clips**. Their labels are *not* used: the model only listens.\n"
            "3. While it listens, every connection's **activation energy** is measured: how much signal "
            "actually flows through it on your data (|weight| × average |input|).\n"
            "4. The connections with the least energy on your data are **pruned** (set to zero), and the "
            "normalisation layers are re-measured on your data.\n"
            "5. A few **check clips** you labelled score the model before and after.\n\n"
            "No backpropagation and no labels: it takes a couple of forward passes over your clips."
        )


home_ui()
