"""The Hugging Face Space entry: serve the detectors named in $DEEPFAKE_XAI_CHECKPOINTS
(comma-separated paths or hf-hub: ids), or the demo detectors when it is unset.

Spaces set GRADIO_SERVER_NAME=0.0.0.0 and the port; locally it listens on 127.0.0.1:7860.
"""

from deepfake_xai.ui import build_demo, serve

demo = build_demo()

if __name__ == "__main__":
    serve(demo)
