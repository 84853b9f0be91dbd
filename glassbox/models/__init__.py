"""Nets (glass-box, AlexNet) and the classification LightningModule."""
