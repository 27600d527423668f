"""Gradio chat UI."""
