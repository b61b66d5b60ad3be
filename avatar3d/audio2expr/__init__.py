"""Speech to expression: features (log-mel, phones, prosody), the models, their training, inference, lip metrics."""
