"""From labels to tensors: image loading and checks, known datasets, episode samplers, synthetic defects."""
