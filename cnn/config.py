"""Objects that remember the arguments that built them, found by class name: what saving
and loading need.

A class family (the layers, the optimizers) derives from :class:`Configurable` and
declares its own ``registry``. Every subclass defined afterwards, in the package or in a
user's notebook, is entered in it under its class name when Python executes its
``class`` statement, and every instance records the constructor arguments it was given.
``save_model`` writes a layer as its class name and :meth:`Configurable.config`;
``load_model`` looks the name up with :meth:`Configurable.lookup` and calls the class
with those arguments. No module named in a file is ever imported, and nothing is
unpickled.
"""

import inspect

import numpy as np


class Configurable:
    """Base of a family of classes whose instances can be rebuilt from
    ``(class name, config())``.

    A family's root class sets ``registry = {}`` and ``family = "layer"``
    (a word for messages).
    """

    #: Constructor arguments never saved: a random generator (a loaded layer's weights
    #: come from the file) and the ``dtype`` (saved with the arrays). A class adds the
    #: names of its own arguments that do not change what it computes (ConvLayer's
    #: ``weight_scale`` and ``impl``, for example).
    not_saved = ("rng", "dtype")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "registry" in cls.__dict__:  # the root of a family: it starts the registry
            return
        name = cls.__name__
        known = cls.registry.get(name)
        if (
            known is not None
            and known.__module__.split(".")[0] == "cnn"
            and cls.__module__.split(".")[0] != "cnn"
        ):
            raise TypeError(
                f"a {cls.family} class named {name!r} is already part of the cnn "
                f"package ({known.__module__}.{name}); give yours another name, e.g. "
                f"'My{name}'"
            )
        # A redefinition under the same name (a notebook cell run again) replaces the
        # older class.
        cls.registry[name] = cls

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        try:
            bound = inspect.signature(cls.__init__).bind(self, *args, **kwargs)
        except TypeError:
            # let __init__ raise its own, clearer error about the arguments
            bound = None
        else:
            bound.apply_defaults()
        self._init_args = {}
        if bound is not None:
            for name, value in list(bound.arguments.items())[1:]:
                kind = bound.signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    self._init_args.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    # *args cannot be passed by name
                    self._init_args[name] = value
        return self

    @classmethod
    def lookup(cls, name):
        """The class of this family registered under ``name``; ValueError naming the
        known ones if none is."""
        if name not in cls.registry:
            raise ValueError(
                f"unknown type {name!r}: no {cls.family} class of that name is defined "
                f"in this process (known: {', '.join(sorted(cls.registry))}); define "
                "or import it before loading"
            )
        return cls.registry[name]

    def config(self):
        """The constructor arguments that rebuild this object, as plain values
        (name -> value).

        Each argument of ``__init__`` is taken from the attribute of the same name if
        the object has one (its current value: a changed dropout rate is saved as
        changed), else as it was passed. The arguments in ``not_saved`` are left out.
        Override this if an argument needs another form.
        """
        config = {}
        for name, passed in self._init_args.items():
            if name in self.not_saved:
                continue
            config[name] = plain(vars(self).get(name, passed))
        return config


def plain(value):
    """A NumPy scalar as the Python number JSON can write, a tuple as a list; anything
    else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value
