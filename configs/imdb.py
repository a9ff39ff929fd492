"""GPT-2 small from the hub, fine-tuned on IMDB reviews (tensorflow-datasets imdb_reviews)."""

from configs import default


def get_config():
    c = default.get_config()
    c.init = "pretrained"
    c.model = "gpt2"
    c.max_length = 256
    c.data.source = "tfds"
    c.data.tfds_name = "imdb_reviews"
    c.data.text_field = "text"
    c.data.label_field = "label"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.train.batch_size = 32
    c.train.eval_batch_size = 64
    c.train.num_epochs = 2.0
    c.train.learning_rate = 2e-5
    return c
