"""The errors vit_hf raises on purpose: each message names what is wrong and what would be right."""


class VitHfError(Exception):
    """Base of every error vit_hf raises about the user's input (recipe, data), as opposed to bugs."""


class RecipeError(VitHfError):
    """A recipe key has a value that is not allowed."""


class DataError(VitHfError):
    """The dataset cannot be loaded or does not fit the recipe's data section."""
