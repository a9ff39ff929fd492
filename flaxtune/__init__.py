"""flaxtune: fine-tune GPT-2 for text classification with JAX/Flax.

Python API (what the CLI and the Colab notebooks call):

    from flaxtune.config import load_config_file
    from flaxtune.train import train_and_evaluate
    from flaxtune.predict import Classifier
"""

__version__ = "0.1.0"
