"""textclf: fine-tune and evaluate pretrained language models for text classification.

The package is laid out as the pipeline (dvc.yaml) is:
    core/         what every stage imports: params, data, tokenization, model families, outputs
    modeling/     the classifier shared by train, evaluate and export: build, batch, score, save
    train/        the train stage: the loop, the frozen-block cache, checkpoints, zero-shot
    evaluate/     the evaluate stage: metrics, plot data, reports
    export/       the export stage: the Hugging Face model directory and its model card
    compare.py    the compare stage (compare/dvc.yaml): every reference run in one table, and
                  the README's results generated from it
    predictor.py  a trained model loaded for prediction (`textclf predict`)
    cli/          the `textclf` command; no stage imports it
Each stage depends on exactly its part (tests/test_stage_dependencies.py). Importing the
package imports nothing heavy.
"""
