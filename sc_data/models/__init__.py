"""The model layer every scorer, the trainer and evaluation share.

``loading`` resolves a model reference to local safetensors/GGUF files and loads it; ``logprob``
is the one log-prob core (tokenise a pair, sum answer log-probs); ``chat`` renders conversations
for classifiers and rubric prompts and runs classifier forwards in batches.
"""
