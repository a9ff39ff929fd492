"""GPT-2 small from the hub, fine-tuned on GLUE SST-2 from tensorflow-datasets."""

from configs import default


def get_config():
    c = default.get_config()
    c.init = "pretrained"
    c.model = "gpt2"
    c.max_length = 64
    c.data.source = "tfds"
    c.data.tfds_name = "glue/sst2"
    c.data.text_field = "sentence"
    c.data.label_field = "label"
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.train.batch_size = 32
    c.train.num_epochs = 3.0
    c.train.learning_rate = 2e-5
    return c
