"""Fine-tuning stage: PEFT methods through LlamaFactory, measured by the shared core.

``args`` (pure: a cell's settings → LlamaFactory's argument dict) imports nothing heavy;
``train`` and ``callback`` need the finetune environment (LlamaFactory, transformers, torch).
"""
