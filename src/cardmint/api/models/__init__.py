"""The API's models by area: request bodies refuse what the database could not store,
response models say what each route answers (and so what OpenAPI documents)."""
