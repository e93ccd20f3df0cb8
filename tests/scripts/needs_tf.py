"""A script that imports TensorFlow without declaring it (no REQUIRES): only some machines can run it."""


def run(job, report):
    import tensorflow as tf

    return {"status": 200, "loss": 0.0, "tensorflow": tf.__version__}
