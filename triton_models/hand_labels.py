"""Hand-assigned ImageNet labels for evaluation photos where the answer is obvious.

Key: photo id (``<source>/<file name>``, see :mod:`triton_models.photos`). Value: the
ImageNet-1k labels (as in ``labels/imagenet_labels.txt``) a person would accept. Labelled
by looking at each photo, not at any model's output; photos whose subject has no
ImageNet-1k class (giraffe, moose, rhinoceros, dolphin, hedgehog, ...) or is ambiguous
stay unlabelled and count only for agreement with FP32.
"""
from __future__ import annotations

CATS = ("tabby", "tiger cat", "Egyptian cat")
CHAMELEONS = ("African chameleon", "American chameleon")

HAND_LABELS: dict[str, tuple[str, ...]] = {
    # streaming/stack/samples.py photos
    "mate-backgrounds/LadyBird.jpg": ("ladybug",),
    "mate-backgrounds/YellowFlower.jpg": ("daisy",),
    "python3-skimage/chelsea.png": CATS,
    "python3-skimage/coffee.png": ("espresso",),
    # lomiri wallpapers
    "lomiri-wallpapers-16.04/Picture_0B_by_freespace.jpg": ("fig",),
    "lomiri-wallpapers-16.04/Picture_1A_by_freespace.jpg": ("paintbrush",),
    # GCompris explore_farm_animals
    "gcompris-farm-animals/cat.webp": CATS,
    "gcompris-farm-animals/chicken.webp": ("hen", "cock"),
    "gcompris-farm-animals/cow.webp": ("ox",),
    "gcompris-farm-animals/dog.webp": ("German shepherd",),
    "gcompris-farm-animals/duck.webp": ("drake", "goose"),
    "gcompris-farm-animals/owl.webp": ("great grey owl",),
    "gcompris-farm-animals/pig.webp": ("hog", "wild boar"),
    "gcompris-farm-animals/sheep.webp": ("ram",),
    # GCompris explore_world_animals
    "gcompris-world-animals/bison.webp": ("bison",),
    "gcompris-world-animals/chameleon.webp": CHAMELEONS,
    "gcompris-world-animals/crocodile.webp": ("African crocodile", "American alligator"),
    "gcompris-world-animals/dragon.webp": ("Komodo dragon",),
    "gcompris-world-animals/jaguar.webp": ("jaguar", "leopard"),
    "gcompris-world-animals/kangaroo.webp": ("wallaby",),
    "gcompris-world-animals/koala.webp": ("koala",),
    "gcompris-world-animals/lemur.webp": ("Madagascar cat",),
    "gcompris-world-animals/panda.webp": ("giant panda",),
    "gcompris-world-animals/polar_bear.webp": ("ice bear",),
    "gcompris-world-animals/scarlet_macaw.webp": ("macaw",),
    # GCompris erase
    "gcompris-erase/alpaca.webp": ("llama",),
    "gcompris-erase/bee.webp": ("bee",),
    "gcompris-erase/calf.webp": ("ox",),
    "gcompris-erase/camels.webp": ("Arabian camel",),
    "gcompris-erase/chamaeleon.webp": CHAMELEONS,
    "gcompris-erase/cheetah.webp": ("cheetah",),
    "gcompris-erase/crab.webp": ("rock crab", "fiddler crab", "Dungeness crab", "king crab"),
    "gcompris-erase/gibbon.webp": ("gibbon", "siamang"),
    "gcompris-erase/gorilla.webp": ("gorilla",),
    "gcompris-erase/gosling.webp": ("goose",),
    "gcompris-erase/horse.webp": ("sorrel",),
    "gcompris-erase/kitten.webp": CATS,
    "gcompris-erase/long_nosed_monkey.webp": ("proboscis monkey",),
    "gcompris-erase/macaque.webp": ("macaque",),
    "gcompris-erase/meerkats.webp": ("meerkat",),
    "gcompris-erase/nubian_ibex.webp": ("ibex",),
    "gcompris-erase/penguin.webp": ("king penguin",),
    "gcompris-erase/red_panda.webp": ("lesser panda",),
    "gcompris-erase/spoonbills.webp": ("spoonbill",),
    "gcompris-erase/squirrel.webp": ("fox squirrel",),
    "gcompris-erase/toucan.webp": ("toucan",),
    # GCompris explore_monuments
    "gcompris-monuments/chateaudeChambord.webp": ("palace", "castle"),
    "gcompris-monuments/neuschwansteinCastle.webp": ("castle", "palace"),
    "gcompris-monuments/citedeCarcassonne.webp": ("castle",),
}
