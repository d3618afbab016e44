"""Everything the tests share, in one place (the fixtures built from them are in conftest.py):

    tiny.py       tiny random models with real tokenizers, fixture data, params, the stage runner
                  and DVC projects in temporary git repositories
    tensors.py    typed params for a tiny model, batches and forward passes
    hub_cache.py  an offline Hugging Face cache holding tiny models and datasets under hub ids
"""
