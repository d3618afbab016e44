"""The shared core every stage imports: params, data, tokenization, model families."""
