"""NeuralNetwork (``.mlmodel``) front end: layer registry, shape worlds, weights, custom layers."""
