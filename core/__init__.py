"""PEFT Playground engine: configs, models, data, methods, training, runs. No Streamlit here."""
