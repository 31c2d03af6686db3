"""Training: the SFT trainer (TRL + PEFT), Ray Train for several workers, chat templates, varlen attention."""
