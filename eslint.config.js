import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
      'no-restricted-syntax': [
        'error',
        {
          // A class field is first defined as undefined when it has no initializer, and V8 then
          // keeps every number stored there later as a new heap number (32 B per write once, in
          // RangeLockEntry): a number field that changes gets a number to start with.
          selector:
            "PropertyDefinition[value=null][readonly!=true][typeAnnotation.typeAnnotation.type='TSNumberKeyword']",
          message: 'A mutable number field needs an initializer (V8 would box its values).',
        },
        {
          selector:
            "TSParameterProperty[readonly!=true][parameter.typeAnnotation.typeAnnotation.type='TSNumberKeyword']",
          message: 'A mutable number parameter property is a field first defined as undefined.',
        },
      ],
    },
  },
);
