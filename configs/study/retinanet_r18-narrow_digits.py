# The study's detection student: the demo's narrow RetinaNet (ResNet-18 at a quarter
# width), 300 iterations of 8 images on the first 200 training images (the low-data
# regime the study measures; see docs/results.md).
_base_ = '../demo/retinanet_r18-narrow_digits.py'

data_root = 'data/study/coco/'
train_dataloader = dict(dataset=dict(data_root=data_root, indices=200))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
