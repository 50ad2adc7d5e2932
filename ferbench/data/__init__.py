"""The data path: the decoded uint8 cache, batched augmentation and batch iteration."""
